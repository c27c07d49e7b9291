/* snakepit sink plugin ABI, version 1.
 *
 * Mirrors the Rust crate snakepit-sink-abi (snakepit-sinks/abi/src/lib.rs);
 * a test checks that sizes and offsets agree. A plugin exports one function:
 *
 *     const SnakepitSinkDescriptor *snakepit_sink_plugin_v1(void);
 *
 * returning a pointer to static data. Strings are UTF-8 pointer + length,
 * not NUL-terminated. Everything the host passes is borrowed for the call
 * only; nothing is freed across the boundary. All calls for one instance come
 * from one host thread, one at a time: create, emit/flush..., destroy. */
#ifndef SNAKEPIT_SINK_H
#define SNAKEPIT_SINK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SNAKEPIT_SINK_ABI_VERSION 1u
#define SNAKEPIT_SINK_MAX_NAME_LEN 64

#define SNAKEPIT_STATUS_OK 0
#define SNAKEPIT_STATUS_ERROR 1    /* failed; message in the ErrorBuf */
#define SNAKEPIT_STATUS_PANICKED 2 /* broken: the host disables the instance */

/* Set when every panic is caught at the boundary (Rust SDK, panic=unwind). */
#define SNAKEPIT_FLAG_CATCHES_PANICS ((uint64_t)1)

#define SNAKEPIT_VALUE_INT 0u
#define SNAKEPIT_VALUE_FLOAT 1u
#define SNAKEPIT_VALUE_STR 2u

typedef struct SnakepitStr {
    const uint8_t *ptr; /* may be NULL when len == 0 */
    size_t len;         /* bytes */
} SnakepitStr;

typedef struct SnakepitValue {
    uint32_t tag; /* SNAKEPIT_VALUE_* */
    union {
        int64_t int_;
        double float_;
        SnakepitStr str;
    } payload;
} SnakepitValue;

typedef struct SnakepitField {
    SnakepitStr key;
    SnakepitValue value;
} SnakepitField;

typedef struct SnakepitEventView {
    SnakepitStr name;           /* e.g. "snakepit.python.call.stop" */
    uint64_t timestamp_ns;      /* Unix epoch */
    SnakepitStr correlation_id; /* len 0 = none */
    uint64_t span_id;           /* 0 = none */
    uint64_t parent_span_id;    /* 0 = none */
    uint64_t trace_id_hi;       /* W3C trace id, both halves 0 = none */
    uint64_t trace_id_lo;
    const SnakepitField *measurements;
    size_t measurements_len;
    const SnakepitField *metadata;
    size_t metadata_len;
} SnakepitEventView;

/* Host-owned buffer for an error message: write at most cap bytes, set len. */
typedef struct SnakepitErrorBuf {
    uint8_t *ptr;
    size_t cap;
    size_t len;
} SnakepitErrorBuf;

typedef int32_t (*SnakepitCreateFn)(const uint8_t *config_json, size_t config_len,
                                    void **out_instance, SnakepitErrorBuf *err);
typedef int32_t (*SnakepitEmitFn)(void *instance, const SnakepitEventView *event,
                                  SnakepitErrorBuf *err);
typedef int32_t (*SnakepitFlushFn)(void *instance, uint64_t timeout_ms,
                                   SnakepitErrorBuf *err);
typedef void (*SnakepitDestroyFn)(void *instance);

typedef struct SnakepitSinkDescriptor {
    uint32_t abi_version; /* SNAKEPIT_SINK_ABI_VERSION */
    uint32_t struct_size; /* sizeof(SnakepitSinkDescriptor) */
    SnakepitStr name;     /* 1..64 bytes of [A-Za-z0-9_.-] */
    uint64_t flags;       /* SNAKEPIT_FLAG_* */
    SnakepitCreateFn create;
    SnakepitEmitFn emit;
    SnakepitFlushFn flush;
    SnakepitDestroyFn destroy;
} SnakepitSinkDescriptor;

/* Writes a message into err (truncated to err->cap bytes). */
static inline void snakepit_error(SnakepitErrorBuf *err, const char *msg) {
    size_t n = 0;
    if (err == NULL || err->ptr == NULL) return;
    while (msg[n] != '\0' && n < err->cap) {
        err->ptr[n] = (uint8_t)msg[n];
        n++;
    }
    err->len = n;
}

#ifdef __cplusplus
}
#endif

#endif /* SNAKEPIT_SINK_H */
