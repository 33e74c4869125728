/* The check of an output file before a run (mp_output.h). */
#include "mp_output.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int mp_output_writable(const char *path, const char *flag, struct mp_err *err)
{
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        return MP_FAIL(err, IO, "%s %s: is a directory: give a file name", flag, path);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0)
        return MP_FAIL(err, IO, "%s %s: cannot write: %s (checked before training, so that "
                       "nothing is lost at the end)", flag, path, strerror(errno));
    close(fd);
    unlink(tmp);
    return 0;
}
