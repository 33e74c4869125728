/* The check that stands between a topology file and hwloc (mp_topo_xml.c): libxml2 parses the file,
 * every object is checked against what hwloc's XML import relies on, and what placement needs is
 * written back as a small canonical hwloc 2 document, the only XML hwloc is ever given. Internal
 * to the partitioner; mp_topo.c is its only caller. */
#ifndef MP_TOPO_XML_H
#define MP_TOPO_XML_H

#include <stddef.h>

#include "mp_err.h"

/* Reads PATH and checks it. On success *xml is a malloc'ed NUL-terminated canonical document of
 * *len bytes (the caller frees it). Malformed or unsupported → MP_ERR_INPUT "PATH:LINE: what",
 * unreadable → MP_ERR_IO "PATH: ...". */
int mp__topo_xml_check(const char *path, char **xml, size_t *len, struct mp_err *err);

/* The same on bytes already in memory (NAME only for messages). */
int mp__topo_xml_check_buffer(const char *name, const char *data, size_t size, char **xml,
                              size_t *len, struct mp_err *err);

#endif
