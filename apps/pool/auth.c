/* MD5 and SCRAM-SHA-256 authentication as PostgreSQL speaks it; see auth.h. */
#include "auth.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

_Static_assert(SHA256_DIGEST_LENGTH == POOL_SCRAM_KEY_LEN, "SCRAM-SHA-256 keys are SHA-256");

enum { ST_INIT = 0, ST_FIRST_DONE, ST_FINAL_DONE, ST_DONE, ST_FAILED };

static const char scram_prefix[] = "SCRAM-SHA-256$";

/* ---- helpers ---- */

bool pool_auth_equal(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Length of base64 of len bytes, without the NUL. */
#define B64_LEN(len) (((len) + 2) / 3 * 4)

int pool_base64_encode(const uint8_t *in, size_t len, char *out, size_t outlen)
{
    if (len > (SIZE_MAX - 3) / 4 * 3 - 1 || B64_LEN(len) >= outlen || B64_LEN(len) > INT_MAX)
        return -ENOSPC;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < len ? b64_alphabet[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? b64_alphabet[v & 63] : '=';
    }
    out[o] = '\0';
    return (int)o;
}

static int b64_value(char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

int pool_base64_decode(const char *in, size_t len, uint8_t *out, size_t outcap)
{
    if (len % 4 != 0 || len / 4 * 3 > INT_MAX)
        return -EINVAL;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        bool last = i + 4 == len;
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            char ch = in[i + (size_t)k];
            if (ch == '=' && last && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad) /* a character after '=' */
                return -EINVAL;
            if ((v[k] = b64_value(ch)) < 0)
                return -EINVAL;
        }
        uint32_t w =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        size_t n = 3 - (size_t)pad;
        if (o + n > outcap)
            return -ENOSPC;
        out[o++] = (uint8_t)(w >> 16);
        if (n > 1)
            out[o++] = (uint8_t)(w >> 8);
        if (n > 2)
            out[o++] = (uint8_t)w;
    }
    return (int)o;
}

/* Parses 1..POOL_SCRAM_MAX_ITERATIONS from exactly s[0..len): digits only. */
static int parse_iterations(const char *s, size_t len, int *out)
{
    if (len == 0 || len > 9) /* 10,000,000 has 8 digits; more can only be too many */
        return -EINVAL;
    long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > POOL_SCRAM_MAX_ITERATIONS)
        return -EINVAL;
    *out = (int)v;
    return 0;
}

/* A nonce is printable ASCII except ',' (RFC 5802's "printable"). */
static bool valid_nonce(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ',')
            return false;
    return true;
}

static int sha256(const void *data, size_t len, uint8_t out[POOL_SCRAM_KEY_LEN])
{
    return EVP_Digest(data, len, out, NULL, EVP_sha256(), NULL) == 1 ? 0 : -EIO;
}

static int hmac256(const uint8_t key[POOL_SCRAM_KEY_LEN], const void *data, size_t len,
                   uint8_t out[POOL_SCRAM_KEY_LEN])
{
    unsigned int n = 0;
    if (!HMAC(EVP_sha256(), key, POOL_SCRAM_KEY_LEN, data, len, out, &n) || n != POOL_SCRAM_KEY_LEN)
        return -EIO;
    return 0;
}

/* Comma-separated fields of a SCRAM message. No attribute value may hold a ',' (RFC 5802
 * escapes it in names as "=2C"), so splitting on ',' is exact. */
typedef struct fields {
    const char *p;
    size_t n;
    bool done;
} fields;

static void fields_init(fields *f, const char *p, size_t n)
{
    f->p = p;
    f->n = n;
    f->done = false;
}

/* The next field, possibly empty; false after the last one. */
static bool fields_next(fields *f, const char **field, size_t *len)
{
    if (f->done)
        return false;
    const char *comma = f->n ? memchr(f->p, ',', f->n) : NULL;
    *field = f->p;
    if (comma) {
        *len = (size_t)(comma - f->p);
        f->n -= *len + 1;
        f->p = comma + 1;
    } else {
        *len = f->n;
        f->p += f->n;
        f->n = 0;
        f->done = true;
    }
    return true;
}

/* Whether field is "<attr>=value"; sets value. */
static bool is_attr(const char *field, size_t len, char attr, const char **val, size_t *vlen)
{
    if (len < 2 || field[0] != attr || field[1] != '=')
        return false;
    *val = field + 2;
    *vlen = len - 2;
    return true;
}

/* An extension attribute: a letter, '=', anything. */
static bool is_extension(const char *field, size_t len)
{
    return len >= 2 &&
           ((field[0] >= 'a' && field[0] <= 'z') || (field[0] >= 'A' && field[0] <= 'Z')) &&
           field[1] == '=';
}

/* A message from a peer: bounded and without NULs. */
static bool valid_message(const char *msg, size_t len)
{
    return msg && len > 0 && len < POOL_SCRAM_MSG_MAX && !memchr(msg, '\0', len);
}

/* Appends s[0..len) to buf of size cap at *pos; false when it does not fit. */
static bool append(char *buf, size_t cap, size_t *pos, const char *s, size_t len)
{
    if (len > cap || *pos > cap - len)
        return false;
    memcpy(buf + *pos, s, len);
    *pos += len;
    return true;
}

/* AuthMessage = client-first-message-bare "," server-first-message ","
 * client-final-message-without-proof; HMACs of it under key into out. */
static int auth_hmac(const char *bare, size_t bare_len, const char *sfirst, size_t sfirst_len,
                     const char *final_wp, size_t final_wp_len, const uint8_t key[32],
                     uint8_t out[32])
{
    char am[3 * POOL_SCRAM_MSG_MAX];
    size_t n = 0;
    if (!append(am, sizeof(am), &n, bare, bare_len) || !append(am, sizeof(am), &n, ",", 1) ||
        !append(am, sizeof(am), &n, sfirst, sfirst_len) || !append(am, sizeof(am), &n, ",", 1) ||
        !append(am, sizeof(am), &n, final_wp, final_wp_len))
        return -EINVAL;
    return hmac256(key, am, n, out);
}

/* ---- MD5 ---- */

static int md5_hex(const void *a, size_t alen, const void *b, size_t blen, char out[POOL_MD5_SIZE])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t d[16];
    unsigned int dlen = 0;
    int rc = -EIO;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return -EIO;
    if (EVP_DigestInit_ex(ctx, EVP_md5(), NULL) != 1 || EVP_DigestUpdate(ctx, a, alen) != 1 ||
        EVP_DigestUpdate(ctx, b, blen) != 1 || EVP_DigestFinal_ex(ctx, d, &dlen) != 1 ||
        dlen != sizeof(d))
        goto out;
    memcpy(out, "md5", 3);
    for (size_t i = 0; i < sizeof(d); i++) {
        out[3 + 2 * i] = hex[d[i] >> 4];
        out[4 + 2 * i] = hex[d[i] & 15];
    }
    out[POOL_MD5_LEN] = '\0';
    rc = 0;
out:
    EVP_MD_CTX_free(ctx);
    return rc;
}

int pool_md5_secret(const char *user, const char *password, char out[POOL_MD5_SIZE])
{
    out[0] = '\0';
    return md5_hex(password, strlen(password), user, strlen(user), out);
}

int pool_md5_response(const char *md5_secret, const uint8_t salt[4], char out[POOL_MD5_SIZE])
{
    out[0] = '\0';
    if (strncmp(md5_secret, "md5", 3) != 0 || strnlen(md5_secret, POOL_MD5_SIZE) != POOL_MD5_LEN)
        return -EINVAL;
    return md5_hex(md5_secret + 3, POOL_MD5_LEN - 3, salt, 4, out);
}

bool pool_md5_check(const char *stored, pool_secret_kind kind, const char *user,
                    const uint8_t salt[4], const char *response)
{
    char secret[POOL_MD5_SIZE], expect[POOL_MD5_SIZE];
    bool ok = false;
    if (!stored || !response || strnlen(response, POOL_MD5_SIZE) != POOL_MD5_LEN)
        return false;
    switch (kind) {
    case POOL_SECRET_PLAIN:
        if (!user || pool_md5_secret(user, stored, secret) < 0)
            return false;
        break;
    case POOL_SECRET_MD5:
        if (strnlen(stored, POOL_MD5_SIZE) != POOL_MD5_LEN)
            return false;
        memcpy(secret, stored, POOL_MD5_SIZE);
        break;
    default: return false;
    }
    if (pool_md5_response(secret, salt, expect) == 0)
        ok = pool_auth_equal(expect, response, POOL_MD5_LEN);
    OPENSSL_cleanse(secret, sizeof(secret));
    OPENSSL_cleanse(expect, sizeof(expect));
    return ok;
}

/* ---- SCRAM-SHA-256: keys and secrets ---- */

int pool_scram_parse_secret(const char *text, pool_scram_secret *out)
{
    memset(out, 0, sizeof(*out));
    if (!text)
        return -EINVAL;
    size_t len = strnlen(text, POOL_SCRAM_MSG_MAX);
    size_t plen = sizeof(scram_prefix) - 1;
    if (len >= POOL_SCRAM_MSG_MAX || len < plen || memcmp(text, scram_prefix, plen) != 0)
        return -EINVAL;
    const char *p = text + plen, *end = text + len;
    const char *colon1 = memchr(p, ':', (size_t)(end - p));
    if (!colon1)
        return -EINVAL;
    const char *dollar = memchr(colon1, '$', (size_t)(end - colon1));
    if (!dollar)
        return -EINVAL;
    const char *colon2 = memchr(dollar, ':', (size_t)(end - dollar));
    if (!colon2)
        return -EINVAL;
    if (parse_iterations(p, (size_t)(colon1 - p), &out->iterations) < 0)
        goto fail;
    int n =
        pool_base64_decode(colon1 + 1, (size_t)(dollar - colon1 - 1), out->salt, sizeof(out->salt));
    if (n <= 0)
        goto fail;
    out->salt_len = (size_t)n;
    if (pool_base64_decode(dollar + 1, (size_t)(colon2 - dollar - 1), out->stored_key,
                           POOL_SCRAM_KEY_LEN) != POOL_SCRAM_KEY_LEN ||
        pool_base64_decode(colon2 + 1, (size_t)(end - colon2 - 1), out->server_key,
                           POOL_SCRAM_KEY_LEN) != POOL_SCRAM_KEY_LEN)
        goto fail;
    return 0;
fail:
    memset(out, 0, sizeof(*out));
    return -EINVAL;
}

int pool_scram_salted_password(const char *password, const uint8_t *salt, size_t salt_len,
                               int iterations, uint8_t out[POOL_SCRAM_KEY_LEN])
{
    if (!password || !salt || salt_len == 0 || salt_len > INT_MAX || iterations < 1 ||
        iterations > POOL_SCRAM_MAX_ITERATIONS)
        return -EINVAL;
    size_t plen = strlen(password);
    if (plen > INT_MAX)
        return -EINVAL;
    if (PKCS5_PBKDF2_HMAC(password, (int)plen, salt, (int)salt_len, iterations, EVP_sha256(),
                          POOL_SCRAM_KEY_LEN, out) != 1)
        return -EIO;
    return 0;
}

int pool_scram_keys(const uint8_t salted[POOL_SCRAM_KEY_LEN], uint8_t client_key[32],
                    uint8_t stored_key[32], uint8_t server_key[32])
{
    uint8_t ck[POOL_SCRAM_KEY_LEN];
    int rc = hmac256(salted, "Client Key", 10, ck);
    if (rc == 0 && stored_key)
        rc = sha256(ck, sizeof(ck), stored_key);
    if (rc == 0 && server_key)
        rc = hmac256(salted, "Server Key", 10, server_key);
    if (rc == 0 && client_key)
        memcpy(client_key, ck, sizeof(ck));
    OPENSSL_cleanse(ck, sizeof(ck));
    return rc;
}

int pool_scram_make_secret(const char *password, const uint8_t *salt, size_t salt_len,
                           int iterations, char *out, size_t outlen)
{
    uint8_t salted[32], stored[32], server[32];
    char salt64[B64_LEN(POOL_SCRAM_SALT_MAX) + 1], stored64[45], server64[45];
    if (outlen)
        out[0] = '\0';
    if (salt_len > POOL_SCRAM_SALT_MAX)
        return -EINVAL;
    int rc = pool_scram_salted_password(password, salt, salt_len, iterations, salted);
    if (rc == 0)
        rc = pool_scram_keys(salted, NULL, stored, server);
    OPENSSL_cleanse(salted, sizeof(salted));
    if (rc < 0)
        return rc;
    pool_base64_encode(salt, salt_len, salt64, sizeof(salt64));
    pool_base64_encode(stored, sizeof(stored), stored64, sizeof(stored64));
    pool_base64_encode(server, sizeof(server), server64, sizeof(server64));
    int n = snprintf(out, outlen, "%s%d:%s$%s:%s", scram_prefix, iterations, salt64, stored64,
                     server64);
    if (n < 0 || (size_t)n >= outlen) {
        if (outlen)
            out[0] = '\0';
        return -ENOSPC;
    }
    return n;
}

/* ---- SCRAM-SHA-256: server side ---- */

/* Parses client-first-message into s (gs2 header, nonce, bare message). */
static int server_parse_first(pool_scram_server *s, const char *msg, size_t len)
{
    fields f;
    const char *fl, *v;
    size_t flen, vlen;
    if (!valid_message(msg, len))
        return -EINVAL;
    fields_init(&f, msg, len);

    /* gs2-cbind-flag */
    if (!fields_next(&f, &fl, &flen))
        return -EINVAL;
    if (flen >= 2 && fl[0] == 'p' && fl[1] == '=')
        return -ENOTSUP; /* channel binding: we offer only SCRAM-SHA-256, not -PLUS */
    if (flen != 1 || (fl[0] != 'n' && fl[0] != 'y'))
        return -EINVAL;
    /* authzid: PostgreSQL supports none */
    if (!fields_next(&f, &fl, &flen))
        return -EINVAL;
    if (flen != 0)
        return is_attr(fl, flen, 'a', &v, &vlen) ? -ENOTSUP : -EINVAL;
    if (f.done) /* no client-first-message-bare */
        return -EINVAL;
    s->_gs2_len = (size_t)(f.p - msg);
    memcpy(s->_gs2_header, msg, s->_gs2_len);
    s->_gs2_header[s->_gs2_len] = '\0';

    const char *bare = f.p;
    size_t bare_len = f.n;
    memcpy(s->_client_first_bare, bare, bare_len);
    s->_client_first_bare[bare_len] = '\0';
    s->_client_first_bare_len = bare_len;

    /* username; "m=" first would be a mandatory extension */
    if (!fields_next(&f, &fl, &flen))
        return -EINVAL;
    if (is_attr(fl, flen, 'm', &v, &vlen))
        return -ENOTSUP;
    if (flen < 2 || fl[0] != 'n' || fl[1] != '=')
        return -EINVAL;
    /* nonce */
    if (!fields_next(&f, &fl, &flen) || !is_attr(fl, flen, 'r', &v, &vlen) ||
        !valid_nonce(v, vlen) || vlen >= POOL_SCRAM_NONCE_MAX)
        return -EINVAL;
    memcpy(s->_nonce, v, vlen);
    s->_nonce[vlen] = '\0';
    s->_nonce_len = vlen;
    /* optional extensions */
    while (fields_next(&f, &fl, &flen))
        if (!is_extension(fl, flen))
            return -EINVAL;
    return 0;
}

int pool_scram_server_first_with_nonce(pool_scram_server *s, const pool_scram_secret *secret,
                                       const char *client_first, size_t len,
                                       const char *server_nonce, char *out, size_t outlen)
{
    char salt64[B64_LEN(POOL_SCRAM_SALT_MAX) + 1];
    memset(s, 0, sizeof(*s));
    s->_state = ST_FAILED;
    if (outlen)
        out[0] = '\0';
    if (!secret || secret->salt_len == 0 || secret->salt_len > POOL_SCRAM_SALT_MAX ||
        secret->iterations < 1 || secret->iterations > POOL_SCRAM_MAX_ITERATIONS || !server_nonce)
        return -EINVAL;
    size_t snonce_len = strnlen(server_nonce, POOL_SCRAM_NONCE_MAX);
    if (!valid_nonce(server_nonce, snonce_len))
        return -EINVAL;
    int rc = server_parse_first(s, client_first, len);
    if (rc < 0)
        return rc;
    if (snonce_len >= POOL_SCRAM_NONCE_MAX - s->_nonce_len)
        return -EINVAL;
    memcpy(s->_nonce + s->_nonce_len, server_nonce, snonce_len);
    s->_nonce_len += snonce_len;
    s->_nonce[s->_nonce_len] = '\0';
    s->_secret = *secret;

    pool_base64_encode(secret->salt, secret->salt_len, salt64, sizeof(salt64));
    int n = snprintf(s->_server_first, sizeof(s->_server_first), "r=%s,s=%s,i=%d", s->_nonce,
                     salt64, secret->iterations);
    if (n < 0 || (size_t)n >= sizeof(s->_server_first))
        return -EINVAL;
    if ((size_t)n >= outlen)
        return -ENOSPC;
    s->_server_first_len = (size_t)n;
    memcpy(out, s->_server_first, (size_t)n + 1);
    s->_state = ST_FIRST_DONE;
    return n;
}

/* A fresh random nonce: POOL_SCRAM_NONCE_RAW bytes, base64. */
static int random_nonce(char out[B64_LEN(POOL_SCRAM_NONCE_RAW) + 1])
{
    uint8_t raw[POOL_SCRAM_NONCE_RAW];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return -EIO;
    pool_base64_encode(raw, sizeof(raw), out, B64_LEN(POOL_SCRAM_NONCE_RAW) + 1);
    return 0;
}

int pool_scram_server_first(pool_scram_server *s, const pool_scram_secret *secret,
                            const char *client_first, size_t len, char *out, size_t outlen)
{
    char nonce[B64_LEN(POOL_SCRAM_NONCE_RAW) + 1];
    if (random_nonce(nonce) < 0) {
        memset(s, 0, sizeof(*s));
        s->_state = ST_FAILED;
        return -EIO;
    }
    return pool_scram_server_first_with_nonce(s, secret, client_first, len, nonce, out, outlen);
}

int pool_scram_server_final(pool_scram_server *s, const char *client_final, size_t len, char *out,
                            size_t outlen)
{
    fields f;
    const char *fl, *v;
    size_t flen, vlen;
    uint8_t cbind[16], proof[POOL_SCRAM_KEY_LEN + 3], sig[32], key[32], stored[32];
    int rc = -EINVAL;

    if (outlen)
        out[0] = '\0';
    if (s->_state != ST_FIRST_DONE)
        return -EINVAL;
    s->_state = ST_FAILED; /* until it succeeds: one try only */
    if (outlen < POOL_SCRAM_FINAL_SIZE)
        return -ENOSPC;
    if (!valid_message(client_final, len))
        return -EINVAL;
    fields_init(&f, client_final, len);

    /* channel-binding: base64 of the gs2 header, as no cbind-data follows it */
    if (!fields_next(&f, &fl, &flen) || !is_attr(fl, flen, 'c', &v, &vlen))
        return -EINVAL;
    int n = pool_base64_decode(v, vlen, cbind, sizeof(cbind));
    if (n < 0 || (size_t)n != s->_gs2_len || memcmp(cbind, s->_gs2_header, s->_gs2_len) != 0)
        return -EINVAL;
    /* nonce */
    if (!fields_next(&f, &fl, &flen) || !is_attr(fl, flen, 'r', &v, &vlen) ||
        vlen != s->_nonce_len || !pool_auth_equal(v, s->_nonce, vlen))
        return -EINVAL;
    /* extensions, then the proof, last */
    for (;;) {
        if (!fields_next(&f, &fl, &flen))
            return -EINVAL; /* no proof */
        if (is_attr(fl, flen, 'p', &v, &vlen))
            break;
        if (!is_extension(fl, flen))
            return -EINVAL;
    }
    if (!f.done)
        return -EINVAL; /* something after the proof */
    size_t without_proof_len = (size_t)(fl - 1 - client_final);
    if (pool_base64_decode(v, vlen, proof, sizeof(proof)) != POOL_SCRAM_KEY_LEN)
        return -EINVAL;

    /* ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); H(ClientKey) = StoredKey */
    rc = auth_hmac(s->_client_first_bare, s->_client_first_bare_len, s->_server_first,
                   s->_server_first_len, client_final, without_proof_len, s->_secret.stored_key,
                   sig);
    if (rc < 0)
        goto out;
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = proof[i] ^ sig[i];
    if ((rc = sha256(key, sizeof(key), stored)) < 0)
        goto out;
    if (!pool_auth_equal(stored, s->_secret.stored_key, sizeof(stored))) {
        rc = -EACCES;
        goto out;
    }
    /* ServerSignature = HMAC(ServerKey, AuthMessage) */
    rc = auth_hmac(s->_client_first_bare, s->_client_first_bare_len, s->_server_first,
                   s->_server_first_len, client_final, without_proof_len, s->_secret.server_key,
                   sig);
    if (rc < 0)
        goto out;
    memcpy(out, "v=", 2);
    rc = pool_base64_encode(sig, sizeof(sig), out + 2, outlen - 2);
    if (rc < 0)
        goto out;
    rc += 2;
    memcpy(s->client_key, key, sizeof(key));
    s->have_client_key = true;
    s->_state = ST_DONE;
out:
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(sig, sizeof(sig));
    return rc;
}

/* ---- SCRAM-SHA-256: client side ---- */

int pool_scram_client_first_ex(pool_scram_client *c, const char *user, const char *nonce, char *out,
                               size_t outlen)
{
    memset(c, 0, sizeof(*c));
    c->_state = ST_FAILED;
    if (outlen)
        out[0] = '\0';
    if (!nonce)
        return -EINVAL;
    size_t len = strnlen(nonce, POOL_SCRAM_NONCE_MAX);
    if (len >= POOL_SCRAM_NONCE_MAX || !valid_nonce(nonce, len))
        return -EINVAL;
    memcpy(c->_client_nonce, nonce, len + 1);
    c->_client_nonce_len = len;

    /* client-first-message-bare: "n=<saslname>,r=<nonce>", ',' and '=' escaped in the name */
    char *bare = c->_client_first_bare;
    size_t cap = sizeof(c->_client_first_bare) - 1, pos = 0;
    bool ok = append(bare, cap, &pos, "n=", 2);
    for (const char *u = user ? user : ""; ok && *u; u++) {
        if (*u == ',')
            ok = append(bare, cap, &pos, "=2C", 3);
        else if (*u == '=')
            ok = append(bare, cap, &pos, "=3D", 3);
        else
            ok = append(bare, cap, &pos, u, 1);
    }
    ok = ok && append(bare, cap, &pos, ",r=", 3) && append(bare, cap, &pos, nonce, len);
    if (!ok)
        return -EINVAL;
    bare[pos] = '\0';
    c->_client_first_bare_len = pos;
    /* gs2 header "n,,": no channel binding, no authzid */
    int m = snprintf(out, outlen, "n,,%s", bare);
    if (m < 0 || (size_t)m >= outlen) {
        if (outlen)
            out[0] = '\0';
        return -ENOSPC;
    }
    c->_state = ST_INIT;
    return m;
}

int pool_scram_client_first_with_nonce(pool_scram_client *c, const char *nonce, char *out,
                                       size_t outlen)
{
    return pool_scram_client_first_ex(c, "", nonce, out, outlen);
}

int pool_scram_client_first(pool_scram_client *c, char *out, size_t outlen)
{
    char nonce[B64_LEN(POOL_SCRAM_NONCE_RAW) + 1];
    if (random_nonce(nonce) < 0) {
        memset(c, 0, sizeof(*c));
        c->_state = ST_FAILED;
        if (outlen)
            out[0] = '\0';
        return -EIO;
    }
    return pool_scram_client_first_with_nonce(c, nonce, out, outlen);
}

int pool_scram_client_server_first(pool_scram_client *c, const char *msg, size_t len)
{
    fields f;
    const char *fl, *v;
    size_t flen, vlen;
    if (c->_state != ST_INIT)
        return -EINVAL;
    c->_state = ST_FAILED;
    if (!valid_message(msg, len))
        return -EINVAL;
    fields_init(&f, msg, len);

    if (!fields_next(&f, &fl, &flen))
        return -EINVAL;
    if (is_attr(fl, flen, 'm', &v, &vlen))
        return -ENOTSUP;
    /* nonce: ours, then the server's part */
    if (!is_attr(fl, flen, 'r', &v, &vlen) || vlen <= c->_client_nonce_len ||
        vlen >= POOL_SCRAM_NONCE_MAX || memcmp(v, c->_client_nonce, c->_client_nonce_len) != 0 ||
        !valid_nonce(v, vlen))
        return -EINVAL;
    memcpy(c->_nonce, v, vlen);
    c->_nonce[vlen] = '\0';
    c->_nonce_len = vlen;
    /* salt */
    if (!fields_next(&f, &fl, &flen) || !is_attr(fl, flen, 's', &v, &vlen))
        return -EINVAL;
    int n = pool_base64_decode(v, vlen, c->salt, sizeof(c->salt));
    if (n <= 0)
        return -EINVAL;
    c->salt_len = (size_t)n;
    /* iteration count */
    if (!fields_next(&f, &fl, &flen) || !is_attr(fl, flen, 'i', &v, &vlen) ||
        parse_iterations(v, vlen, &c->iterations) < 0)
        return -EINVAL;
    while (fields_next(&f, &fl, &flen))
        if (!is_extension(fl, flen))
            return -EINVAL;

    memcpy(c->_server_first, msg, len);
    c->_server_first[len] = '\0';
    c->_server_first_len = len;
    c->_state = ST_FIRST_DONE;
    return 0;
}

int pool_scram_client_set_salted(pool_scram_client *c, const uint8_t salted[POOL_SCRAM_KEY_LEN])
{
    if (c->_state != ST_FIRST_DONE)
        return -EINVAL;
    int rc = pool_scram_keys(salted, c->_client_key, NULL, c->_server_key);
    if (rc < 0)
        return rc;
    c->_have_keys = true;
    return 0;
}

void pool_scram_client_set_keys(pool_scram_client *c, const uint8_t client_key[32],
                                const uint8_t server_key[32])
{
    memcpy(c->_client_key, client_key, POOL_SCRAM_KEY_LEN);
    memcpy(c->_server_key, server_key, POOL_SCRAM_KEY_LEN);
    c->_have_keys = true;
}

int pool_scram_client_final(pool_scram_client *c, char *out, size_t outlen)
{
    char msg[POOL_SCRAM_MSG_MAX];
    uint8_t stored[32], sig[32], proof[32];
    if (outlen)
        out[0] = '\0';
    if (c->_state != ST_FIRST_DONE || !c->_have_keys)
        return -EINVAL;
    /* "biws" is base64 of the gs2 header "n,," */
    int n = snprintf(msg, sizeof(msg), "c=biws,r=%s", c->_nonce);
    if (n < 0 || (size_t)n >= sizeof(msg))
        return -EINVAL;
    size_t without_proof_len = (size_t)n;
    int rc = sha256(c->_client_key, sizeof(c->_client_key), stored);
    if (rc == 0)
        rc = auth_hmac(c->_client_first_bare, c->_client_first_bare_len, c->_server_first,
                       c->_server_first_len, msg, without_proof_len, stored, sig);
    if (rc == 0)
        rc = auth_hmac(c->_client_first_bare, c->_client_first_bare_len, c->_server_first,
                       c->_server_first_len, msg, without_proof_len, c->_server_key,
                       c->_server_signature);
    if (rc < 0)
        goto out;
    for (size_t i = 0; i < sizeof(proof); i++)
        proof[i] = c->_client_key[i] ^ sig[i];
    size_t pos = without_proof_len;
    if (!append(msg, sizeof(msg), &pos, ",p=", 3)) {
        rc = -EINVAL;
        goto out;
    }
    rc = pool_base64_encode(proof, sizeof(proof), msg + pos, sizeof(msg) - pos);
    if (rc < 0) {
        rc = -EINVAL;
        goto out;
    }
    pos += (size_t)rc;
    if (pos >= outlen) {
        rc = -ENOSPC; /* the caller may retry with a larger buffer */
        goto out;
    }
    memcpy(out, msg, pos + 1);
    c->_state = ST_FINAL_DONE;
    rc = (int)pos;
out:
    OPENSSL_cleanse(sig, sizeof(sig));
    OPENSSL_cleanse(proof, sizeof(proof));
    return rc;
}

int pool_scram_client_verify(pool_scram_client *c, const char *msg, size_t len)
{
    fields f;
    const char *fl, *v;
    size_t flen, vlen;
    uint8_t sig[POOL_SCRAM_KEY_LEN + 3];
    if (c->_state != ST_FINAL_DONE)
        return -EINVAL;
    c->_state = ST_FAILED;
    if (!valid_message(msg, len))
        return -EINVAL;
    fields_init(&f, msg, len);
    if (!fields_next(&f, &fl, &flen))
        return -EINVAL;
    if (is_attr(fl, flen, 'e', &v, &vlen))
        return -EPERM;
    if (!is_attr(fl, flen, 'v', &v, &vlen) ||
        pool_base64_decode(v, vlen, sig, sizeof(sig)) != POOL_SCRAM_KEY_LEN)
        return -EINVAL;
    while (fields_next(&f, &fl, &flen))
        if (!is_extension(fl, flen))
            return -EINVAL;
    if (!pool_auth_equal(sig, c->_server_signature, POOL_SCRAM_KEY_LEN))
        return -EACCES;
    c->_state = ST_DONE;
    return 0;
}
