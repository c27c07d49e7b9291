/* A snakepit sink plugin in C: one text line per event.
 *
 *   cc -shared -fPIC -I snakepit-sinks/abi/include \
 *      -o libtext_sink.so snakepit-sinks/plugins-c/text_sink.c
 *
 * Config: {"path": "/some/file.txt"}. Each event becomes
 *
 *   snakepit.pool.status ts=1700000000000000000 corr=req-1 queue_depth=3 pool_name=default
 *
 * (corr=- when there is no correlation id; measurements, then metadata).
 * Lines are buffered by stdio and written out on flush and destroy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snakepit_sink.h"

typedef struct TextSink {
    FILE *out;
} TextSink;

/* Finds the string value of "key" in a flat JSON object (enough for this
 * sample's config; a real plugin would use a JSON parser). Copies it
 * unescaped into buf. Returns 0 on success. */
static int json_string(const uint8_t *json, size_t len, const char *key, char *buf, size_t cap) {
    size_t klen = strlen(key);
    for (size_t i = 0; i + klen + 2 <= len; i++) {
        if (json[i] != '"' || memcmp(json + i + 1, key, klen) != 0 || json[i + 1 + klen] != '"')
            continue;
        size_t j = i + klen + 2;
        while (j < len && (json[j] == ' ' || json[j] == ':')) j++;
        if (j >= len || json[j] != '"') return -1;
        size_t n = 0;
        for (j++; j < len && json[j] != '"'; j++) {
            if (json[j] == '\\' && j + 1 < len) j++; /* \" \\ \/ */
            if (n + 1 >= cap) return -1;
            buf[n++] = (char)json[j];
        }
        buf[n] = '\0';
        return j < len ? 0 : -1;
    }
    return -1;
}

static int32_t text_create(const uint8_t *config_json, size_t config_len, void **out_instance,
                           SnakepitErrorBuf *err) {
    char path[4096];
    if (json_string(config_json, config_len, "path", path, sizeof path) != 0) {
        snakepit_error(err, "config key `path` is missing: set it to the output file");
        return SNAKEPIT_STATUS_ERROR;
    }
    TextSink *sink = malloc(sizeof *sink);
    if (sink == NULL) {
        snakepit_error(err, "out of memory");
        return SNAKEPIT_STATUS_ERROR;
    }
    sink->out = fopen(path, "a");
    if (sink->out == NULL) {
        free(sink);
        snakepit_error(err, "cannot open the output file");
        return SNAKEPIT_STATUS_ERROR;
    }
    *out_instance = sink;
    return SNAKEPIT_STATUS_OK;
}

static void write_fields(FILE *out, const SnakepitField *fields, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const SnakepitField *f = &fields[i];
        fprintf(out, " %.*s=", (int)f->key.len, (const char *)f->key.ptr);
        switch (f->value.tag) {
        case SNAKEPIT_VALUE_INT:
            fprintf(out, "%lld", (long long)f->value.payload.int_);
            break;
        case SNAKEPIT_VALUE_FLOAT:
            fprintf(out, "%g", f->value.payload.float_);
            break;
        default:
            fprintf(out, "%.*s", (int)f->value.payload.str.len,
                    (const char *)f->value.payload.str.ptr);
        }
    }
}

static int32_t text_emit(void *instance, const SnakepitEventView *e, SnakepitErrorBuf *err) {
    TextSink *sink = instance;
    fprintf(sink->out, "%.*s ts=%llu corr=", (int)e->name.len, (const char *)e->name.ptr,
            (unsigned long long)e->timestamp_ns);
    if (e->correlation_id.len == 0)
        fputs("-", sink->out);
    else
        fprintf(sink->out, "%.*s", (int)e->correlation_id.len, (const char *)e->correlation_id.ptr);
    write_fields(sink->out, e->measurements, e->measurements_len);
    write_fields(sink->out, e->metadata, e->metadata_len);
    if (fputc('\n', sink->out) == EOF) {
        snakepit_error(err, "write failed");
        return SNAKEPIT_STATUS_ERROR;
    }
    return SNAKEPIT_STATUS_OK;
}

static int32_t text_flush(void *instance, uint64_t timeout_ms, SnakepitErrorBuf *err) {
    (void)timeout_ms;
    TextSink *sink = instance;
    if (fflush(sink->out) != 0) {
        snakepit_error(err, "flush failed");
        return SNAKEPIT_STATUS_ERROR;
    }
    return SNAKEPIT_STATUS_OK;
}

static void text_destroy(void *instance) {
    TextSink *sink = instance;
    fclose(sink->out);
    free(sink);
}

static const SnakepitSinkDescriptor DESCRIPTOR = {
    .abi_version = SNAKEPIT_SINK_ABI_VERSION,
    .struct_size = sizeof(SnakepitSinkDescriptor),
    .name = {(const uint8_t *)"text", 4},
    .flags = 0, /* C does not unwind */
    .create = text_create,
    .emit = text_emit,
    .flush = text_flush,
    .destroy = text_destroy,
};

const SnakepitSinkDescriptor *snakepit_sink_plugin_v1(void) { return &DESCRIPTOR; }
