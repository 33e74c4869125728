/* Checkpoint internals that need no MPI (engine/ckpt/mp_ckpt.h): the manifest round-trips every field
 * exactly (doubles included), damaged manifests are refused as MP_ERR_CKPT, candidates come
 * latest-first then newest-first, SHA-256 matches the standard test vector, and the fault
 * injection spec fires only on the save it names. Saving and resuming under MPI are tested by
 * tests/test_resume.sh and tests/test_failures.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mp_ckpt.h"

static char dir[256];

static int make_dir(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/test_ckpt.XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void sample_manifest(struct mp__ckpt_manifest *m)
{
    memset(m, 0, sizeof *m);
    m->pos.step = 1234567890123ULL, m->pos.epoch = 3, m->pos.cursor = 17, m->pos.epoch_steps = 17;
    m->pos.epoch_loss = 0.1 + 1e-17 * 3; /* needs all 17 digits */
    m->pos.lr_state = (struct mp_lr_state){.scale = 0.01, .best = 1.0 / 3.0, .bad_epochs = 2,
                                           .cooldown_left = 1};
    m->P = 2, m->V = 2, m->S = 4, m->M = 8, m->batch = 256, m->n_train = 60000;
    int b[] = {1, 3, 5, 7, 9};
    memcpy(m->bounds, b, sizeof b);
    snprintf(m->schedule, sizeof m->schedule, "interleaved");
    snprintf(m->model_digest, sizeof m->model_digest, "0123456789abcdef");
    snprintf(m->data_src, sizeof m->data_src, "synthetic:512");
    mp_optim_defaults(&m->optim, MP_OPT_ADAMW);
    m->state_slots = 2;
    mp_lr_defaults(&m->lr, MP_LR_COSINE);
    m->lr.base_lr = 3e-4, m->lr.warmup = 10, m->lr.total_steps = 999;
    m->clip_norm = 1.5, m->seed = 42, m->shuffle = 1;
    for (int v = 0; v < 4; v++) {
        struct mp__ckpt_file *f = &m->files[v];
        snprintf(f->name, sizeof f->name, "stage-%d.safetensors", v);
        memset(f->sha256, 'a' + v, 64);
        f->bytes = 1000u + (uint64_t)v, f->v = v, f->first_layer = b[v], f->last_layer = b[v + 1] - 1;
    }
}

static void test_manifest_round_trips_every_field_exactly(void **state)
{
    (void)state;
    static struct mp__ckpt_manifest a, b;
    struct mp_err err;
    sample_manifest(&a);
    assert_int_equal(mp__ckpt_manifest_write(dir, &a, &err), 0);
    assert_int_equal(mp__ckpt_manifest_read(dir, &b, &err), 0);
    assert_memory_equal(&a.pos, &b.pos, sizeof a.pos);
    assert_memory_equal(&a.optim, &b.optim, sizeof a.optim);
    assert_memory_equal(&a.lr, &b.lr, sizeof a.lr);
    assert_memory_equal(a.bounds, b.bounds, sizeof(int) * 5);
    assert_memory_equal(a.files, b.files, sizeof a.files[0] * 4);
    assert_true(a.P == b.P && a.V == b.V && a.S == b.S && a.M == b.M && a.batch == b.batch);
    assert_true(a.seed == b.seed && a.shuffle == b.shuffle && a.clip_norm == b.clip_norm);
    assert_string_equal(a.schedule, b.schedule);
    assert_string_equal(a.model_digest, b.model_digest);
    assert_string_equal(a.data_src, b.data_src);
}

static void test_damaged_manifest_is_a_checkpoint_error(void **state)
{
    (void)state;
    static struct mp__ckpt_manifest m;
    struct mp_err err;
    char path[300];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    const char *bad[] = {"{\"format\": \"mpipe-checkpoint\"", "{}", "[1, 2]",
                         "{\"format\": \"other\", \"step\": 1}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(bad[i], f);
        fclose(f);
        assert_int_equal(mp__ckpt_manifest_read(dir, &m, &err), -1);
        assert_int_equal(err.code, MP_ERR_CKPT);
    }
    unlink(path);
    assert_int_equal(mp__ckpt_manifest_read(dir, &m, &err), -1);
    assert_int_equal(err.code, MP_ERR_CKPT);
}

static void test_candidates_are_latest_first_then_newest_first(void **state)
{
    (void)state;
    char p[400];
    const char *names[] = {"step-5", "step-40", "step-300", ".step-500.tmp", "step-7x"};
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        assert_int_equal(mkdir(p, 0755), 0);
    }
    snprintf(p, sizeof p, "%s/latest", dir);
    assert_int_equal(symlink("step-40", p), 0);
    uint64_t steps[16];
    struct mp_err err;
    assert_int_equal(mp__ckpt_candidates(dir, steps, 16, &err), 3);
    assert_true(steps[0] == 40 && steps[1] == 300 && steps[2] == 5);
    snprintf(p, sizeof p, "%s/nowhere", dir);
    assert_int_equal(mp__ckpt_candidates(p, steps, 16, &err), 0);
}

static void test_sha256_matches_the_standard_vector(void **state)
{
    (void)state;
    char path[300], hex[65];
    snprintf(path, sizeof path, "%s/abc", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("abc", f);
    fclose(f);
    uint64_t bytes = 0;
    struct mp_err err;
    assert_int_equal(mp__ckpt_sha256_file(path, hex, &bytes, &err), 0);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(bytes, 3);
    snprintf(path, sizeof path, "%s/missing", dir);
    assert_int_equal(mp__ckpt_sha256_file(path, hex, &bytes, &err), -1);
    assert_int_equal(err.code, MP_ERR_CKPT);
}

static void test_fault_injection_fires_only_on_the_named_save(void **state)
{
    (void)state;
    unsetenv("MPIPE_FAULT_INJECT");
    assert_false(mp__ckpt_fault("ckpt_write", 1));
    setenv("MPIPE_FAULT_INJECT", "ckpt_write", 1);
    assert_true(mp__ckpt_fault("ckpt_write", 1));
    assert_false(mp__ckpt_fault("ckpt_write", 2));
    setenv("MPIPE_FAULT_INJECT", "ckpt_write:3", 1);
    assert_false(mp__ckpt_fault("ckpt_write", 1));
    assert_true(mp__ckpt_fault("ckpt_write", 3));
    setenv("MPIPE_FAULT_INJECT", "ckpt_writer", 1);
    assert_false(mp__ckpt_fault("ckpt_write", 1));
    unsetenv("MPIPE_FAULT_INJECT");
}

static void test_optimizer_state_names_follow_the_slots(void **state)
{
    (void)state;
    assert_string_equal(mp__ckpt_slot_suffix(MP_OPT_ADAM, 0), ".m");
    assert_string_equal(mp__ckpt_slot_suffix(MP_OPT_ADAM, 1), ".v");
    assert_string_equal(mp__ckpt_slot_suffix(MP_OPT_MOMENTUM, 0), ".m");
    assert_string_equal(mp__ckpt_slot_suffix(MP_OPT_RMSPROP, 0), ".v");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_manifest_round_trips_every_field_exactly, make_dir,
                                        remove_dir),
        cmocka_unit_test_setup_teardown(test_damaged_manifest_is_a_checkpoint_error, make_dir,
                                        remove_dir),
        cmocka_unit_test_setup_teardown(test_candidates_are_latest_first_then_newest_first,
                                        make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_sha256_matches_the_standard_vector, make_dir,
                                        remove_dir),
        cmocka_unit_test(test_fault_injection_fires_only_on_the_named_save),
        cmocka_unit_test(test_optimizer_state_names_follow_the_slots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
