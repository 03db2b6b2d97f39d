/*
 * ovsa_runtime.h: the plain C API of libovsaruntime.so (see docs/RUNTIME.md).
 *
 * Status values mirror ovms::CustomLoaderStatus. Every function is safe to call with NULL
 * pointers (it returns an error status); none lets a Rust panic or C++ exception escape.
 * Error details: ovsa_last_error() (thread-local, reset by every other call).
 * One OvsaLoader per OVMS loader_name; all calls on one loader are thread-safe except
 * ovsa_loader_free, which must be the last call on it.
 */
#ifndef OVSA_RUNTIME_H
#define OVSA_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OVSA_OK 0
#define OVSA_MODEL_TYPE_IR 1
#define OVSA_MODEL_TYPE_ONNX 2
#define OVSA_MODEL_TYPE_BLOB 3
#define OVSA_MODEL_LOAD_ERROR 4
#define OVSA_MODEL_BLACKLISTED 5
#define OVSA_INTERNAL_ERROR 6

/* Buffer selectors passed to the allocation callback. */
#define OVSA_BUFFER_MODEL 0   /* IR XML or ONNX model */
#define OVSA_BUFFER_WEIGHTS 1 /* IR weights (never requested for ONNX) */

typedef struct OvsaLoader OvsaLoader;

/*
 * Allocation callback: return `size` writable bytes owned by the caller for buffer `which`,
 * valid and untouched by others until ovsa_loader_load_model returns, or NULL on failure.
 * Called at most once per buffer and load. Must not throw or longjmp.
 */
typedef uint8_t *(*ovsa_alloc_fn)(void *ctx, int32_t which, size_t size);

/*
 * Creates a loader. config_path: NULL or "" for defaults, else a loader config file (JSON).
 * Returns OVSA_OK and stores the handle in *out; OVSA_INTERNAL_ERROR if the config is unusable.
 */
int32_t ovsa_loader_new(const char *config_path, OvsaLoader **out);

/*
 * Loads version `version` of `name` from base_path/<version> with the model's
 * custom_loader_options JSON (all values strings; "keystore" and "controlled_access_file"
 * required). Decrypts straight into the buffers obtained from alloc(alloc_ctx, which, size);
 * on failure they are wiped. Returns OVSA_MODEL_TYPE_IR or OVSA_MODEL_TYPE_ONNX (also stored in
 * *model_type if non-NULL), else OVSA_MODEL_LOAD_ERROR. Never OVSA_OK.
 */
int32_t ovsa_loader_load_model(const OvsaLoader *loader, const char *name, const char *base_path,
                               int32_t version, const char *options_json, ovsa_alloc_fn alloc,
                               void *alloc_ctx, int32_t *model_type);

/* OVSA_OK or OVSA_MODEL_BLACKLISTED. Reads a flag only: no I/O, never blocks. */
int32_t ovsa_loader_blacklist_status(const OvsaLoader *loader, const char *name, int32_t version);

/* Unloads (name, version) and stops its lease worker. Idempotent; unknown versions are fine. */
int32_t ovsa_loader_unload(const OvsaLoader *loader, const char *name, int32_t version);

/* Forgets every version of `name` (model removed from the configuration). */
int32_t ovsa_loader_retire(const OvsaLoader *loader, const char *name);

/* Stops every lease worker and frees the loader. NULL is a no-op. */
void ovsa_loader_free(OvsaLoader *loader);

/*
 * Copies this thread's last error message into buf (NUL-terminated, truncated to len - 1
 * bytes; buf may be NULL). Returns the message's full length without the NUL (0: no error).
 */
size_t ovsa_last_error(char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* OVSA_RUNTIME_H */
