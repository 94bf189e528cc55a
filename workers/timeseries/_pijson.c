/*
 * workers.timeseries._pijson: a /streamsets/recorded body straight into columns, no Python object
 * per value. Why C: msgspec builds a struct per value and Python reads six fields out of
 * each; that was two thirds of the worker's CPU (docs/DESIGN.md, "Decode").
 *
 * It reads only the usual, clean body and answers None for anything else (a field it does
 * not know, an escaped key, a lone surrogate, a null Value, Errors, a timestamp it cannot
 * parse exactly as Arrow would, bad UTF-8, malformed JSON): the caller then decodes that
 * body with msgspec or orjson, which judge and quarantine every oddity. So this parser
 * never decides what is bad data; it only has to be exact on what it accepts.
 *
 * decode(body: bytes) -> None | (streams, n, ts, kind, number, quality, text_offsets,
 *                                text_data, state_code, state_system, state_offsets,
 *                                state_data)
 *   streams: list of (WebId, Name | None, UnitsAbbreviation | None, value count)
 *   ts: int64[n] microseconds since the epoch (fraction truncated)
 *   kind: uint8[n], 0 number, 1 string, 2 digital-state object
 *   number: float64[n] (0 where not a number)
 *   quality: uint8[4n], Good, Questionable, Substituted, Annotated per value:
 *            0 false, 1 true, 2 null or absent
 *   text_offsets / state_offsets: int32[n + 1] Arrow string offsets into text_data /
 *            state_data (empty where the value is of another kind)
 *   state_code: int32[n]; state_system: uint8[n]
 */
#define PY_SSIZE_T_CLEAN
/* The stable ABI of 3.11: one abi3 wheel serves every CPython from 3.11 (setup.py). */
#define Py_LIMITED_API 0x030B0000
#include <Python.h>
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 64
#define LITERAL(p, word) literal(p, word, sizeof(word) - 1)
#define IS_KEY(at, len, name) ((len) == sizeof(name) - 1 && memcmp(at, name, len) == 0)
#define KEY(p, name) key(p, "\"" name "\"", sizeof(name) + 1)

typedef struct {
    char *p;
    size_t len, cap;
} Buf;

/* The parser's cursor and its output: fixed-width columns sized for `cap` values (grown
 * together), the strings of values and of state names in two byte buffers. */
typedef struct {
    const unsigned char *s, *end;
    int oom;
    Py_ssize_t n, cap;
    PyObject *streams;
    int64_t *ts;
    uint8_t *kind, *qual, *sys;
    double *num;
    int32_t *toff, *code, *soff;
    Buf tdata, sdata, scratch;
} P;

enum { BAIL = -1 };

static int buf_put(P *p, Buf *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        char *q = PyMem_Realloc(b->p, cap);
        if (q == NULL) {
            p->oom = 1;
            return BAIL;
        }
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

static int resize(P *p, void **column, Py_ssize_t count, size_t width) {
    void *q = PyMem_Realloc(*column, (size_t)count * width);
    if (q == NULL) {
        p->oom = 1;
        return BAIL;
    }
    *column = q;
    return 0;
}

/* Room for `cap` values in every column (offsets have one more entry). */
static int reserve(P *p, Py_ssize_t cap) {
    if (resize(p, (void **)&p->ts, cap, 8) || resize(p, (void **)&p->kind, cap, 1) ||
        resize(p, (void **)&p->qual, cap, 4) || resize(p, (void **)&p->sys, cap, 1) ||
        resize(p, (void **)&p->num, cap, 8) || resize(p, (void **)&p->toff, cap + 1, 4) ||
        resize(p, (void **)&p->code, cap, 4) || resize(p, (void **)&p->soff, cap + 1, 4))
        return BAIL;
    p->cap = cap;
    return 0;
}

static void ws(P *p) {
    while (p->s < p->end &&
           (*p->s == ' ' || *p->s == '\n' || *p->s == '\r' || *p->s == '\t'))
        p->s++;
}

static int expect(P *p, unsigned char c) {
    ws(p);
    if (p->s >= p->end || *p->s != c) return BAIL;
    p->s++;
    return 0;
}

/* RFC 3629 UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF. */
static int valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c == 0xE0) { need = 2; lo = 0xA0; }
        else if (c >= 0xE1 && c <= 0xEC) need = 2;
        else if (c == 0xED) { need = 2; hi = 0x9F; }
        else if (c >= 0xEE && c <= 0xEF) need = 2;
        else if (c == 0xF0) { need = 3; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) need = 3;
        else if (c == 0xF4) { need = 3; hi = 0x8F; }
        else return 0;
        if (i + need >= n) return 0;
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t k = 2; k <= need; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return 0;
        i += need + 1;
    }
    return 1;
}

/* Bytes a string scan must stop at: the quote, a backslash, control bytes, non-ASCII. */
static unsigned char STOP[256];

static void init_stop(void) {
    for (int c = 0; c < 256; c++) STOP[c] = c == '"' || c == '\\' || c < 0x20 || c >= 0x80;
}

/* A key: a string without escapes, its bytes (between the quotes) in *at, *len. */
static int plain_string(P *p, const unsigned char **at, size_t *len) {
    ws(p);
    if (p->s >= p->end || *p->s != '"') return BAIL;
    const unsigned char *start = ++p->s, *s = start, *e = p->end;
    int high = 0;
    for (;;) {
        while (s < e && !STOP[*s]) s++;
        if (s >= e || *s == '\\' || *s < 0x20) return BAIL;
        if (*s == '"') break;
        high = 1;
        s++;
    }
    *at = start;
    *len = (size_t)(s - start);
    p->s = s + 1;
    if (high && !valid_utf8(start, *len)) return BAIL;
    return 0;
}

static int hex4(const unsigned char *s, const unsigned char *end, unsigned *out) {
    unsigned v = 0;
    if (end - s < 4) return BAIL;
    for (int k = 0; k < 4; k++) {
        unsigned char c = s[k];
        unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                            : 16;
        if (d == 16) return BAIL;
        v = v * 16 + d;
    }
    *out = v;
    return 0;
}

/* The escapes of s..end (a string's raw bytes) resolved onto `out`, as UTF-8. A surrogate
 * escape must be a high one followed by a low one (a lone one declines: orjson refuses it,
 * and Arrow strings must be valid UTF-8). */
static int unescape(P *p, Buf *out, const unsigned char *s, const unsigned char *end) {
    while (s < end) {
        const unsigned char *run = s;
        while (s < end && *s != '\\') s++;
        if (buf_put(p, out, run, (size_t)(s - run))) return BAIL;
        if (s >= end) break;
        unsigned char c = *++s, one;
        s++;
        switch (c) {
        case '"': case '\\': case '/': one = c; break;
        case 'b': one = '\b'; break;
        case 'f': one = '\f'; break;
        case 'n': one = '\n'; break;
        case 'r': one = '\r'; break;
        case 't': one = '\t'; break;
        case 'u': {
            unsigned cp, low;
            if (hex4(s, end, &cp)) return BAIL;
            s += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return BAIL;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (end - s < 6 || s[0] != '\\' || s[1] != 'u' || hex4(s + 2, end, &low) ||
                    low < 0xDC00 || low > 0xDFFF)
                    return BAIL;
                s += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            }
            unsigned char utf8[4];
            size_t n;
            if (cp < 0x80) {
                utf8[0] = (unsigned char)cp;
                n = 1;
            } else if (cp < 0x800) {
                utf8[0] = (unsigned char)(0xC0 | cp >> 6);
                utf8[1] = (unsigned char)(0x80 | (cp & 0x3F));
                n = 2;
            } else if (cp < 0x10000) {
                utf8[0] = (unsigned char)(0xE0 | cp >> 12);
                utf8[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
                utf8[2] = (unsigned char)(0x80 | (cp & 0x3F));
                n = 3;
            } else {
                utf8[0] = (unsigned char)(0xF0 | cp >> 18);
                utf8[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
                utf8[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
                utf8[3] = (unsigned char)(0x80 | (cp & 0x3F));
                n = 4;
            }
            if (buf_put(p, out, utf8, n)) return BAIL;
            continue;
        }
        default: return BAIL;
        }
        if (buf_put(p, out, &one, 1)) return BAIL;
    }
    return 0;
}

/* A JSON string at the cursor, its text appended to `out` (raw UTF-8 checked, escapes
 * resolved). */
static int string_to(P *p, Buf *out) {
    ws(p);
    if (p->s >= p->end || *p->s != '"') return BAIL;
    const unsigned char *start = ++p->s, *s = start, *e = p->end;
    int high = 0, escaped = 0;
    for (;;) {
        while (s < e && !STOP[*s]) s++;
        if (s >= e || *s < 0x20) return BAIL;
        if (*s == '"') break;
        if (*s == '\\') {
            if (e - s < 2) return BAIL;
            escaped = 1;
            s += 2; /* the escaped byte, even a quote; unescape() checks what it is */
            continue;
        }
        high = 1;
        s++;
    }
    if (high && !valid_utf8(start, (size_t)(s - start))) return BAIL;
    p->s = s + 1;
    if (!escaped) return buf_put(p, out, start, (size_t)(s - start));
    return unescape(p, out, start, s);
}

static int literal(P *p, const char *word, size_t n) {
    if ((size_t)(p->end - p->s) < n || memcmp(p->s, word, n) != 0) return BAIL;
    p->s += n;
    return 0;
}

/* The quoted key `quoted` (n bytes) at the cursor, then its colon. */
static int key(P *p, const char *quoted, size_t n) {
    if (literal(p, quoted, n)) return BAIL;
    return expect(p, ':');
}

/* After a member: 1 at a comma (another member follows), 0 at the closing brace. */
static int member_end(P *p) {
    ws(p);
    if (p->s < p->end && *p->s == ',') {
        p->s++;
        ws(p);
        return 1;
    }
    return expect(p, '}') ? BAIL : 0;
}

/* JSON number grammar; *is_int when it has no fraction and no exponent. */
static int number_token(P *p, const unsigned char **at, int *is_int, int *digits) {
    ws(p);
    const unsigned char *s = p->s, *e = p->end;
    *at = s;
    if (s < e && *s == '-') s++;
    const unsigned char *d = s;
    if (s < e && *s == '0') s++;
    else if (s < e && *s >= '1' && *s <= '9')
        while (s < e && *s >= '0' && *s <= '9') s++;
    else return BAIL;
    *digits = (int)(s - d);
    *is_int = 1;
    if (s < e && *s == '.') {
        s++;
        if (s >= e || *s < '0' || *s > '9') return BAIL;
        while (s < e && *s >= '0' && *s <= '9') s++;
        *is_int = 0;
    }
    if (s < e && (*s == 'e' || *s == 'E')) {
        s++;
        if (s < e && (*s == '+' || *s == '-')) s++;
        if (s >= e || *s < '0' || *s > '9') return BAIL;
        while (s < e && *s >= '0' && *s <= '9') s++;
        *is_int = 0;
    }
    p->s = s;
    return 0;
}

static int64_t int_of(const unsigned char *at, const unsigned char *end) {
    int neg = *at == '-';
    int64_t v = 0;
    for (const unsigned char *s = at + neg; s < end; s++) v = v * 10 + (*s - '0');
    return neg ? -v : v;
}

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* As msgspec then pyarrow would: an integer literal is a Python int made a double (exact
 * to 2^53, rounded to nearest even beyond), so "-0" is +0.0; any other literal is
 * correctly rounded: by one exact operation when its digits and power of ten are both
 * exact doubles (Clinger's fast path: at most 15 digits, |exponent| <= 22), else by
 * CPython's own dtoa. Too long an integer, or an overflow, bails. */
static int number(P *p, double *out) {
    const unsigned char *at;
    int is_int, digits;
    if (number_token(p, &at, &is_int, &digits)) return BAIL;
    if (is_int) {
        if (digits > 18) return BAIL;
        *out = (double)int_of(at, p->s);
        return 0;
    }
    const unsigned char *s = at + (*at == '-');
    uint64_t w = 0;
    int count = 0, frac = 0, exp10 = 0, exp_sign = 1;
    for (; s < p->s && *s >= '0' && *s <= '9'; s++, count++) w = w * 10 + (uint64_t)(*s - '0');
    if (s < p->s && *s == '.')
        for (s++; s < p->s && *s >= '0' && *s <= '9'; s++, count++, frac++)
            w = w * 10 + (uint64_t)(*s - '0');
    if (s < p->s) {
        s++;
        if (*s == '-' || *s == '+') exp_sign = *s++ == '-' ? -1 : 1;
        for (; s < p->s && exp10 < 10000; s++) exp10 = exp10 * 10 + (*s - '0');
    }
    int e = exp_sign * exp10 - frac;
    if (count <= 15 && e >= -22 && e <= 22) {
        double v = e < 0 ? (double)w / POW10[-e] : (double)w * POW10[e];
        *out = *at == '-' ? -v : v;
        return 0;
    }
    char *stop = NULL;
    double v = PyOS_string_to_double((const char *)at, &stop, NULL);
    if (v == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return BAIL;
    }
    if ((const unsigned char *)stop != p->s || !isfinite(v)) return BAIL;
    *out = v;
    return 0;
}

static int skip_value(P *p, int depth);

static int skip_string(P *p) {
    const unsigned char *start = ++p->s;
    int high = 0;
    while (p->s < p->end && *p->s != '"') {
        unsigned char c = *p->s;
        if (c < 0x20) return BAIL;
        high |= c >= 0x80;
        if (c == '\\') {
            if (++p->s >= p->end) return BAIL;
            c = *p->s;
            if (c == 'u') {
                /* Surrogates as unescape() takes them: a high one followed by a low one,
                 * else decline (the Python readers refuse a lone one, skipped or not). */
                unsigned cp, low;
                if (hex4(p->s + 1, p->end, &cp)) return BAIL;
                p->s += 4;
                if (cp >= 0xDC00 && cp <= 0xDFFF) return BAIL;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (p->end - p->s < 7 || p->s[1] != '\\' || p->s[2] != 'u' ||
                        hex4(p->s + 3, p->end, &low) || low < 0xDC00 || low > 0xDFFF)
                        return BAIL;
                    p->s += 6;
                }
            } else if (!strchr("\"\\/bfnrt", c) || c == 0) {
                return BAIL;
            }
        }
        p->s++;
    }
    if (p->s >= p->end) return BAIL;
    if (high && !valid_utf8(start, (size_t)(p->s - start))) return BAIL;
    p->s++;
    return 0;
}

/* Any JSON value (a field pidelta does not read, e.g. Links), checked and stepped over. */
static int skip_value(P *p, int depth) {
    if (depth > MAX_DEPTH) return BAIL;
    ws(p);
    if (p->s >= p->end) return BAIL;
    unsigned char c = *p->s;
    if (c == '"') return skip_string(p);
    if (c == '{' || c == '[') {
        unsigned char close = c == '{' ? '}' : ']';
        p->s++;
        ws(p);
        if (p->s < p->end && *p->s == close) {
            p->s++;
            return 0;
        }
        for (;;) {
            if (c == '{') {
                ws(p);
                if (p->s >= p->end || *p->s != '"' || skip_string(p) || expect(p, ':'))
                    return BAIL;
            }
            if (skip_value(p, depth + 1)) return BAIL;
            ws(p);
            if (p->s >= p->end) return BAIL;
            if (*p->s == ',') {
                p->s++;
                continue;
            }
            if (*p->s != close) return BAIL;
            p->s++;
            return 0;
        }
    }
    if (c == 't') return LITERAL(p, "true");
    if (c == 'f') return LITERAL(p, "false");
    if (c == 'n') return LITERAL(p, "null");
    const unsigned char *at;
    int is_int, digits;
    return number_token(p, &at, &is_int, &digits);
}

/* Step to the next member of an object: 1 with its key in at and len, 0 at the end. */
static int next_member(P *p, int *first, const unsigned char **at, size_t *len) {
    ws(p);
    if (p->s >= p->end) return BAIL;
    if (*p->s == '}') {
        p->s++;
        return 0;
    }
    if (!*first) {
        if (*p->s != ',') return BAIL;
        p->s++;
    }
    *first = 0;
    if (plain_string(p, at, len) || expect(p, ':')) return BAIL;
    return 1;
}

static int days_in_month(int y, int m) {
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return days[m - 1] + (m == 2 && leap);
}

static int digits_of(const unsigned char *s, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return BAIL;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* YYYY-MM-DDTHH:MM:SS[.1-9 digits]Z only, 1970-2261 (Arrow's nanosecond cast covers that
 * span, and truncation towards zero equals the floor there); anything else bails. */
static int timestamp(const unsigned char *s, size_t len, int64_t *out) {
    int y, mo, d, h, mi, sec;
    if (len < 20 || s[len - 1] != 'Z' || s[4] != '-' || s[7] != '-' || s[10] != 'T' ||
        s[13] != ':' || s[16] != ':')
        return BAIL;
    if (digits_of(s, 4, &y) || digits_of(s + 5, 2, &mo) || digits_of(s + 8, 2, &d) ||
        digits_of(s + 11, 2, &h) || digits_of(s + 14, 2, &mi) || digits_of(s + 17, 2, &sec))
        return BAIL;
    if (y < 1970 || y > 2261 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) ||
        h > 23 || mi > 59 || sec > 59)
        return BAIL;
    int64_t micro = 0;
    if (len > 20) {
        size_t frac = len - 21;
        if (s[19] != '.' || frac < 1 || frac > 9) return BAIL;
        for (size_t i = 0; i < frac; i++) {
            unsigned char c = s[20 + i];
            if (c < '0' || c > '9') return BAIL;
            if (i < 6) micro = micro * 10 + (c - '0');
        }
        for (size_t i = frac; i < 6; i++) micro *= 10;
    }
    int64_t yy = y - (mo <= 2);
    int64_t era = yy / 400, yoe = yy - era * 400;
    int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
    *out = ((days * 86400 + h * 3600 + mi * 60 + sec) * 1000000) + micro;
    return 0;
}

/* {"Name": str, "Value": int32, "IsSystem": bool (absent: false)}, nothing else. */
static int state(P *p, Py_ssize_t i) {
    int seen = 0, more;
    int64_t code = 0;
    uint8_t system = 0;
    if (expect(p, '{')) return BAIL;
    ws(p);
    do {
        if (p->end - p->s < 2) return BAIL;
        int field = p->s[1] == 'N' ? 0 : p->s[1] == 'V' ? 1 : p->s[1] == 'I' ? 2 : -1;
        if (field < 0 || seen & (1 << field)) return BAIL;
        seen |= 1 << field;
        if (field == 0) {
            if (KEY(p, "Name") || string_to(p, &p->sdata)) return BAIL;
        } else if (field == 1) {
            const unsigned char *num;
            int is_int, digits;
            if (KEY(p, "Value") || number_token(p, &num, &is_int, &digits) || !is_int ||
                digits > 10)
                return BAIL;
            code = int_of(num, p->s);
            if (code < INT32_MIN || code > INT32_MAX) return BAIL;
        } else {
            if (KEY(p, "IsSystem")) return BAIL;
            ws(p);
            if (p->s < p->end && *p->s == 't') {
                if (LITERAL(p, "true")) return BAIL;
                system = 1;
            } else if (LITERAL(p, "false")) {
                return BAIL;
            }
        }
    } while ((more = member_end(p)) == 1);
    if (more == BAIL || (seen & 3) != 3) return BAIL;
    p->code[i] = (int32_t)code;
    p->sys[i] = system;
    return 0;
}

/* The quoted keys of a TimedValue by their first letter: Good, Questionable, Substituted,
 * Annotated (the quality flags, in this order), Timestamp, Value. */
static int timed_field(P *p) {
    if (p->end - p->s < 2) return BAIL;
    switch (p->s[1]) {
    case 'G': return KEY(p, "Good") ? BAIL : 0;
    case 'Q': return KEY(p, "Questionable") ? BAIL : 1;
    case 'S': return KEY(p, "Substituted") ? BAIL : 2;
    case 'A': return KEY(p, "Annotated") ? BAIL : 3;
    case 'T': return KEY(p, "Timestamp") ? BAIL : 4;
    case 'V': return KEY(p, "Value") ? BAIL : 5;
    default: return BAIL;
    }
}

static int timed_value(P *p) {
    Py_ssize_t i = p->n;
    int seen = 0, more;
    if (i == p->cap && reserve(p, 2 * p->cap)) return BAIL;
    p->kind[i] = 0;
    p->num[i] = 0;
    p->code[i] = 0;
    p->sys[i] = 0;
    memset(p->qual + 4 * i, 2, 4);
    if (expect(p, '{')) return BAIL;
    ws(p);
    do {
        int field = timed_field(p);
        if (field == BAIL || seen & (1 << field)) return BAIL;
        seen |= 1 << field;
        ws(p);
        if (p->s >= p->end) return BAIL;
        unsigned char c = *p->s;
        if (field == 4) {
            /* Every byte up to the quote is checked by `timestamp`. */
            size_t room = (size_t)(p->end - p->s) - 1;
            const unsigned char *close = memchr(p->s + 1, '"', room < 32 ? room : 32);
            if (c != '"' || close == NULL ||
                timestamp(p->s + 1, (size_t)(close - p->s - 1), &p->ts[i]))
                return BAIL;
            p->s = close + 1;
        } else if (field == 5) {
            if (c == '"') {
                p->kind[i] = 1;
                if (string_to(p, &p->tdata)) return BAIL;
            } else if (c == '{') {
                p->kind[i] = 2;
                if (state(p, i)) return BAIL;
            } else if (c == '-' || (c >= '0' && c <= '9')) {
                if (number(p, &p->num[i])) return BAIL;
            } else {
                return BAIL;
            }
        } else if (c == 't') {
            if (LITERAL(p, "true")) return BAIL;
            p->qual[4 * i + field] = 1;
        } else if (c == 'f') {
            if (LITERAL(p, "false")) return BAIL;
            p->qual[4 * i + field] = 0;
        } else if (LITERAL(p, "null")) {
            return BAIL;
        }
    } while ((more = member_end(p)) == 1);
    if (more == BAIL || (seen & 0x30) != 0x30) return BAIL;
    p->toff[i + 1] = (int32_t)p->tdata.len;
    p->soff[i + 1] = (int32_t)p->sdata.len;
    p->n++;
    return 0;
}

/* A string or null field of a stream as a Python object (None for null). */
static PyObject *text_or_null(P *p) {
    ws(p);
    if (p->s < p->end && *p->s == 'n') {
        if (LITERAL(p, "null")) return NULL;
        Py_RETURN_NONE;
    }
    p->scratch.len = 0;
    if (string_to(p, &p->scratch)) return NULL;
    PyObject *text = PyUnicode_DecodeUTF8(p->scratch.p ? p->scratch.p : "",
                                          (Py_ssize_t)p->scratch.len, "strict");
    if (text == NULL) p->oom = 1;
    return text;
}

/* A JSON array whose every element `element` reads. */
static int array_of(P *p, int (*element)(P *)) {
    if (expect(p, '[')) return BAIL;
    ws(p);
    if (p->s < p->end && *p->s == ']') {
        p->s++;
        return 0;
    }
    for (;;) {
        if (element(p)) return BAIL;
        ws(p);
        if (p->s >= p->end || *p->s != ',') return expect(p, ']');
        p->s++;
    }
}

static const char *const STREAM_FIELDS[] = {"WebId", "Name", "UnitsAbbreviation", "Items",
                                             "WebException"};

static int stream(P *p) {
    const unsigned char *at;
    size_t len;
    int first = 1, got, seen = 0, failed = 0;
    PyObject *text[3] = {NULL, NULL, NULL};
    Py_ssize_t before = p->n;
    if (expect(p, '{')) return BAIL;
    while (!failed && (got = next_member(p, &first, &at, &len)) == 1) {
        int field = -1;
        for (int k = 0; k < 5; k++)
            if (len == strlen(STREAM_FIELDS[k]) && memcmp(at, STREAM_FIELDS[k], len) == 0)
                field = k;
        if (field < 0) {
            failed = skip_value(p, 1);
        } else if (seen & (1 << field)) {
            failed = 1;
        } else if (field < 3) {
            text[field] = text_or_null(p);
            failed = text[field] == NULL || (field == 0 && text[field] == Py_None);
        } else if (field == 3) {
            failed = array_of(p, timed_value);
        } else {
            ws(p);
            failed = LITERAL(p, "null");
        }
        if (field >= 0) seen |= 1 << field;
    }
    PyObject *row = NULL;
    if (!failed && got == 0 && (seen & 9) == 9)
        row = Py_BuildValue("(OOOn)", text[0], text[1] ? text[1] : Py_None,
                            text[2] ? text[2] : Py_None, p->n - before);
    for (int k = 0; k < 3; k++) Py_XDECREF(text[k]);
    if (row == NULL) {
        if (PyErr_Occurred()) p->oom = 1;
        return BAIL;
    }
    failed = PyList_Append(p->streams, row);
    Py_DECREF(row);
    if (failed) p->oom = 1;
    return failed ? BAIL : 0;
}

static int body(P *p) {
    const unsigned char *at;
    size_t len;
    int first = 1, got, items = 0;
    if (expect(p, '{')) return BAIL;
    while ((got = next_member(p, &first, &at, &len)) == 1) {
        if (IS_KEY(at, len, "Items")) {
            if (items++ || array_of(p, stream)) return BAIL;
        } else if (skip_value(p, 1)) {
            return BAIL;
        }
    }
    ws(p);
    if (got == BAIL || !items || p->s != p->end) return BAIL;
    return 0;
}

static PyObject *bytes_of(const void *data, Py_ssize_t size) {
    return PyBytes_FromStringAndSize(size ? (const char *)data : "", size);
}

static PyObject *result_of(P *p) {
    Py_ssize_t n = p->n;
    PyObject *parts[] = {
        Py_NewRef(p->streams),
        PyLong_FromSsize_t(n),
        bytes_of(p->ts, 8 * n),
        bytes_of(p->kind, n),
        bytes_of(p->num, 8 * n),
        bytes_of(p->qual, 4 * n),
        bytes_of(p->toff, 4 * (n + 1)),
        bytes_of(p->tdata.p, (Py_ssize_t)p->tdata.len),
        bytes_of(p->code, 4 * n),
        bytes_of(p->sys, n),
        bytes_of(p->soff, 4 * (n + 1)),
        bytes_of(p->sdata.p, (Py_ssize_t)p->sdata.len),
    };
    Py_ssize_t count = (Py_ssize_t)(sizeof parts / sizeof parts[0]);
    PyObject *result = PyTuple_New(count);
    for (Py_ssize_t k = 0; k < count; k++) {
        if (parts[k] == NULL || result == NULL) {
            Py_XDECREF(result);
            for (Py_ssize_t j = 0; j < count; j++) Py_XDECREF(parts[j]);
            return NULL;
        }
    }
    for (Py_ssize_t k = 0; k < count; k++) PyTuple_SetItem(result, k, parts[k]); /* steals */
    return result;
}

static PyObject *decode(PyObject *module, PyObject *arg) {
    (void)module;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "decode() takes bytes");
        return NULL;
    }
    Py_ssize_t size = PyBytes_Size(arg);
    if (size >= INT32_MAX) Py_RETURN_NONE;
    P p;
    memset(&p, 0, sizeof p);
    p.s = (const unsigned char *)PyBytes_AsString(arg);
    p.end = p.s + size;
    p.streams = PyList_New(0);
    if (p.streams == NULL) return NULL;
    PyObject *result = NULL;
    /* The smallest TimedValue this accepts is over 40 bytes: one allocation per body. */
    if (reserve(&p, size / 40 + 16) == 0) {
        p.toff[0] = p.soff[0] = 0;
        if (body(&p) == 0) result = result_of(&p);
        else if (!p.oom) result = Py_NewRef(Py_None);
    }
    if (p.oom && !PyErr_Occurred()) PyErr_NoMemory();
    void *columns[] = {p.ts,   p.kind,    p.qual,    p.sys,     p.num, p.toff,
                       p.code, p.soff, p.tdata.p, p.sdata.p, p.scratch.p};
    for (size_t k = 0; k < sizeof columns / sizeof columns[0]; k++) PyMem_Free(columns[k]);
    Py_DECREF(p.streams);
    return result;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_O, "A clean /streamsets/recorded body as columns, else None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_pijson", NULL, 0, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__pijson(void) {
    init_stop();
    return PyModule_Create(&module);
}
