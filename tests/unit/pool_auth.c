/* pool auth: MD5 and SCRAM-SHA-256 as PostgreSQL speaks them, checked against RFC 7677's
 * example, vectors computed with Python's hashlib/hmac, and malformed peer messages. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "auth.h"

TestSuite(pool_auth, .timeout = 60);

/* ---- vectors ------------------------------------------------------------------- */

/* RFC 7677, section 3. */
#define RFC_CLIENT_FIRST "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
#define RFC_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_SERVER_FIRST                                                                           \
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CLIENT_FINAL                                                                           \
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"                                 \
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
/* The secret PostgreSQL would store for "pencil" with that salt (hashlib.pbkdf2_hmac). */
#define PENCIL_SECRET                                                                              \
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"    \
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

/* "correct horse", salt "0123456789abcdef", 1000 iterations (hashlib), and an exchange
 * with PostgreSQL's empty n= computed with hmac. */
#define HORSE_SECRET                                                                               \
    "SCRAM-SHA-256$1000:MDEyMzQ1Njc4OWFiY2RlZg==$eI3RrHdDcD/iE2oHvBOmzXfCkowgOZ1GyFItX/xoAJE=:"    \
    "Lpokqaf6IbcBmBBQw8xjLxPdo8vnjoDzQbqXhmWXRnQ="
#define HORSE_CNONCE "fyko+d2lbbFgONRv9qkxdawL"
#define HORSE_SNONCE "3rfcNHYJY1ZVvWVs7j"
#define HORSE_CLIENT_FINAL                                                                         \
    "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"                                         \
    "p=7zTf+rz+EbN7PCKe0YaSR0DYrzGGEu8aO1qO20/OJAI="
#define HORSE_SERVER_FINAL "v=TOjIRSKvmnKIiI+jnnZxkFmxysVOhaYBOmu46CpBR90="

static const uint8_t horse_salt[] = "0123456789abcdef";

/* ---- helpers ------------------------------------------------------------------- */

static pool_scram_secret parse_secret(const char *text)
{
    pool_scram_secret sec;
    cr_assert_eq(pool_scram_parse_secret(text, &sec), 0, "parse %s", text);
    return sec;
}

/* A server that has answered client_first with server nonce snonce. */
static void server_started(pool_scram_server *s, const char *secret_text, const char *client_first,
                           const char *snonce)
{
    pool_scram_secret sec = parse_secret(secret_text);
    char out[POOL_SCRAM_MSG_MAX];
    int n = pool_scram_server_first_with_nonce(s, &sec, client_first, strlen(client_first), snonce,
                                               out, sizeof(out));
    cr_assert_gt(n, 0, "server_first: %d", n);
}

/* A horse exchange up to the client-final-message; expects server_final's return. */
static int horse_final(const char *client_final)
{
    pool_scram_server s;
    char out[POOL_SCRAM_MSG_MAX];
    server_started(&s, HORSE_SECRET, "n,,n=,r=" HORSE_CNONCE, HORSE_SNONCE);
    int rc = pool_scram_server_final(&s, client_final, strlen(client_final), out, sizeof(out));
    if (rc < 0) {
        cr_expect_not(s.have_client_key);
        cr_expect_eq(out[0], '\0');
    }
    return rc;
}

static int server_first_rc(const char *client_first, size_t len)
{
    pool_scram_secret sec = parse_secret(HORSE_SECRET);
    pool_scram_server s;
    char out[POOL_SCRAM_MSG_MAX];
    return pool_scram_server_first(&s, &sec, client_first, len, out, sizeof(out));
}

/* A client that has sent its first message with nonce HORSE_CNONCE; returns
 * client_server_first's result on msg. */
static int client_server_first_rc(pool_scram_client *c, const char *msg)
{
    char out[POOL_SCRAM_MSG_MAX];
    cr_assert_gt(pool_scram_client_first_with_nonce(c, HORSE_CNONCE, out, sizeof(out)), 0);
    return pool_scram_client_server_first(c, msg, strlen(msg));
}

/* ---- MD5 ----------------------------------------------------------------------- */

Test(pool_auth, md5_secret_matches_postgresql)
{
    char out[POOL_MD5_SIZE];
    cr_assert_eq(pool_md5_secret("postgres", "postgres", out), 0);
    cr_assert_str_eq(out, "md53175bce1d3201d16594cebf9d7eb3f9d");
}

Test(pool_auth, md5_response_hashes_the_secret_with_the_salt)
{
    static const uint8_t salt[4] = {1, 2, 3, 4};
    char out[POOL_MD5_SIZE];
    /* md5(hex || salt), computed with hashlib */
    cr_assert_eq(pool_md5_response("md53175bce1d3201d16594cebf9d7eb3f9d", salt, out), 0);
    cr_assert_str_eq(out, "md568be9ed08db75f318087ab337aaea044");
    cr_expect_eq(pool_md5_response("md5short", salt, out), -EINVAL);
    cr_expect_eq(pool_md5_response("sha3175bce1d3201d16594cebf9d7eb3f9d", salt, out), -EINVAL);
    cr_expect_eq(pool_md5_response("md53175bce1d3201d16594cebf9d7eb3f9dX", salt, out), -EINVAL);
}

Test(pool_auth, md5_check_accepts_plain_and_md5_secrets_and_rejects_the_rest)
{
    static const uint8_t salt[4] = {1, 2, 3, 4}, other[4] = {1, 2, 3, 5};
    const char *good = "md568be9ed08db75f318087ab337aaea044";
    const char *md5 = "md53175bce1d3201d16594cebf9d7eb3f9d";
    cr_expect(pool_md5_check("postgres", POOL_SECRET_PLAIN, "postgres", salt, good));
    cr_expect(pool_md5_check(md5, POOL_SECRET_MD5, "postgres", salt, good));
    cr_expect(pool_md5_check(md5, POOL_SECRET_MD5, NULL, salt, good));
    cr_expect_not(pool_md5_check(md5, POOL_SECRET_MD5, "postgres", other, good));
    cr_expect_not(pool_md5_check("postgre", POOL_SECRET_PLAIN, "postgres", salt, good));
    cr_expect_not(pool_md5_check("postgres", POOL_SECRET_PLAIN, "postgre", salt, good));
    cr_expect_not(pool_md5_check(PENCIL_SECRET, POOL_SECRET_SCRAM, "postgres", salt, good));
    cr_expect_not(pool_md5_check(md5, POOL_SECRET_MD5, "postgres", salt, "md568be9ed08db75f31"));
    cr_expect_not(pool_md5_check(md5, POOL_SECRET_MD5, "postgres", salt,
                                 "md568be9ed08db75f318087ab337aaea0444"));
    cr_expect_not(pool_md5_check(md5, POOL_SECRET_MD5, "postgres", salt,
                                 "MD568BE9ED08DB75F318087AB337AAEA044"));
    cr_expect_not(pool_md5_check(md5, POOL_SECRET_MD5, "postgres", salt, ""));
    cr_expect_not(pool_md5_check("md5abc", POOL_SECRET_MD5, "postgres", salt, good));
}

/* ---- base64 -------------------------------------------------------------------- */

Test(pool_auth, base64_round_trips_and_rejects_malformed_text)
{
    char text[16];
    uint8_t bin[16];
    cr_expect_eq(pool_base64_encode((const uint8_t *)"n,,", 3, text, sizeof(text)), 4);
    cr_expect_str_eq(text, "biws");
    cr_expect_eq(pool_base64_encode((const uint8_t *)"ab", 2, text, sizeof(text)), 4);
    cr_expect_str_eq(text, "YWI=");
    cr_expect_eq(pool_base64_encode((const uint8_t *)"a", 1, text, sizeof(text)), 4);
    cr_expect_str_eq(text, "YQ==");
    cr_expect_eq(pool_base64_encode((const uint8_t *)"", 0, text, sizeof(text)), 0);
    cr_expect_eq(pool_base64_encode((const uint8_t *)"abc", 3, text, 4), -ENOSPC);

    cr_expect_eq(pool_base64_decode("YWI=", 4, bin, sizeof(bin)), 2);
    cr_expect_eq(memcmp(bin, "ab", 2), 0);
    cr_expect_eq(pool_base64_decode("YQ==", 4, bin, sizeof(bin)), 1);
    cr_expect_eq(pool_base64_decode("", 0, bin, sizeof(bin)), 0);
    cr_expect_eq(pool_base64_decode("YWJj", 4, bin, 2), -ENOSPC);
    const char *bad[] = {"YWI",  "Y===",  "=YWI", "YW=I", "YQ==YWJj",
                         "YW I", "YW\nI", "YW*I", "YQ=a"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect_eq(pool_base64_decode(bad[i], strlen(bad[i]), bin, sizeof(bin)), -EINVAL, "'%s'",
                     bad[i]);
}

/* ---- secrets ------------------------------------------------------------------- */

Test(pool_auth, make_secret_matches_hashlib)
{
    char out[256];
    const uint8_t rfc_salt[] = {0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e,
                                0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81};
    int n = pool_scram_make_secret("pencil", rfc_salt, sizeof(rfc_salt), 4096, out, sizeof(out));
    cr_assert_eq(n, (int)strlen(PENCIL_SECRET));
    cr_assert_str_eq(out, PENCIL_SECRET);
    n = pool_scram_make_secret("correct horse", horse_salt, 16, 1000, out, sizeof(out));
    cr_assert_str_eq(out, HORSE_SECRET);
    cr_expect_eq(pool_scram_make_secret("pencil", rfc_salt, 16, 4096, out, 40), -ENOSPC);
    cr_expect_eq(out[0], '\0');
    cr_expect_eq(pool_scram_make_secret("pencil", rfc_salt, 0, 4096, out, sizeof(out)), -EINVAL);
    cr_expect_eq(pool_scram_make_secret("pencil", rfc_salt, 16, 0, out, sizeof(out)), -EINVAL);
}

Test(pool_auth, parse_secret_reads_postgresql_format)
{
    pool_scram_secret sec = parse_secret(PENCIL_SECRET);
    cr_expect_eq(sec.iterations, 4096);
    cr_expect_eq(sec.salt_len, 16);
    cr_expect_eq(sec.salt[0], 0x5b);
    cr_expect_eq(sec.salt[15], 0x81);

    /* the keys are those of the salted password */
    uint8_t salted[32], stored[32], server[32];
    cr_assert_eq(pool_scram_salted_password("pencil", sec.salt, sec.salt_len, 4096, salted), 0);
    cr_assert_eq(pool_scram_keys(salted, NULL, stored, server), 0);
    cr_expect_eq(memcmp(stored, sec.stored_key, 32), 0);
    cr_expect_eq(memcmp(server, sec.server_key, 32), 0);
}

Test(pool_auth, parse_secret_rejects_malformed_secrets)
{
    const char *bad[] = {
        "",
        "md53175bce1d3201d16594cebf9d7eb3f9d",
        "SCRAM-SHA-256$",
        "SCRAM-SHA-256$4096",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
        /* iterations: zero, negative, signed, huge, overflowing, not a number */
        "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$-1:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$+4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$10000001:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4q"
        "Y=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$99999999999999999999:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFz"
        "pcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4k:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        /* empty salt, bad base64 salt */
        "SCRAM-SHA-256$4096:$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7so*sUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        /* keys of the wrong length */
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkd:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=AAAA",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:",
        /* a separator too many */
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=:",
        "SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        pool_scram_secret sec;
        cr_expect_eq(pool_scram_parse_secret(bad[i], &sec), -EINVAL, "'%s'", bad[i]);
    }
    pool_scram_secret sec;
    cr_expect_eq(pool_scram_parse_secret(NULL, &sec), -EINVAL);
    /* a salt longer than 64 bytes */
    char text[512];
    char salt64[128];
    uint8_t salt[65] = {0};
    pool_base64_encode(salt, sizeof(salt), salt64, sizeof(salt64));
    snprintf(text, sizeof(text),
             "SCRAM-SHA-256$4096:%s$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
             "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
             salt64);
    cr_expect_eq(pool_scram_parse_secret(text, &sec), -EINVAL);
}

/* ---- SCRAM exchanges ----------------------------------------------------------- */

Test(pool_auth, rfc7677_example_runs_through_client_and_server)
{
    pool_scram_client c;
    pool_scram_server s;
    pool_scram_secret sec = parse_secret(PENCIL_SECRET);
    char cmsg[POOL_SCRAM_MSG_MAX], smsg[POOL_SCRAM_MSG_MAX];

    int n = pool_scram_client_first_ex(&c, "user", "rOprNGfwEbeRWgbNEkqO", cmsg, sizeof(cmsg));
    cr_assert_eq(n, (int)strlen(RFC_CLIENT_FIRST));
    cr_assert_str_eq(cmsg, RFC_CLIENT_FIRST);

    n = pool_scram_server_first_with_nonce(&s, &sec, cmsg, strlen(cmsg), RFC_SNONCE, smsg,
                                           sizeof(smsg));
    cr_assert_eq(n, (int)strlen(RFC_SERVER_FIRST));
    cr_assert_str_eq(smsg, RFC_SERVER_FIRST);

    cr_assert_eq(pool_scram_client_server_first(&c, smsg, strlen(smsg)), 0);
    cr_expect_eq(c.iterations, 4096);
    cr_expect_eq(c.salt_len, 16);
    uint8_t salted[32];
    cr_assert_eq(pool_scram_salted_password("pencil", c.salt, c.salt_len, c.iterations, salted), 0);
    cr_assert_eq(pool_scram_client_set_salted(&c, salted), 0);

    n = pool_scram_client_final(&c, cmsg, sizeof(cmsg));
    cr_assert_eq(n, (int)strlen(RFC_CLIENT_FINAL));
    cr_assert_str_eq(cmsg, RFC_CLIENT_FINAL);

    n = pool_scram_server_final(&s, cmsg, strlen(cmsg), smsg, sizeof(smsg));
    cr_assert_eq(n, (int)strlen(RFC_SERVER_FINAL), "server_final: %d", n);
    cr_assert_str_eq(smsg, RFC_SERVER_FINAL);
    cr_assert(s.have_client_key);
    uint8_t client_key[32];
    cr_assert_eq(pool_scram_keys(salted, client_key, NULL, NULL), 0);
    cr_expect_eq(memcmp(s.client_key, client_key, 32), 0);

    cr_expect_eq(pool_scram_client_verify(&c, smsg, strlen(smsg)), 0);
}

Test(pool_auth, exchange_with_empty_user_name_matches_hmac_vector)
{
    pool_scram_client c;
    char cmsg[POOL_SCRAM_MSG_MAX], smsg[POOL_SCRAM_MSG_MAX];
    cr_assert_eq(client_server_first_rc(&c, "r=" HORSE_CNONCE HORSE_SNONCE
                                            ",s=MDEyMzQ1Njc4OWFiY2RlZg==,i=1000"),
                 0);
    uint8_t salted[32];
    cr_assert_eq(
        pool_scram_salted_password("correct horse", c.salt, c.salt_len, c.iterations, salted), 0);
    cr_assert_eq(pool_scram_client_set_salted(&c, salted), 0);
    cr_assert_gt(pool_scram_client_final(&c, cmsg, sizeof(cmsg)), 0);
    cr_assert_str_eq(cmsg, HORSE_CLIENT_FINAL);

    pool_scram_server s;
    server_started(&s, HORSE_SECRET, "n,,n=,r=" HORSE_CNONCE, HORSE_SNONCE);
    cr_assert_gt(pool_scram_server_final(&s, cmsg, strlen(cmsg), smsg, sizeof(smsg)), 0);
    cr_assert_str_eq(smsg, HORSE_SERVER_FINAL);
    cr_expect_eq(pool_scram_client_verify(&c, smsg, strlen(smsg)), 0);
}

Test(pool_auth, random_nonces_differ_and_exchange_succeeds)
{
    pool_scram_client c1, c2;
    pool_scram_server s;
    pool_scram_secret sec = parse_secret(HORSE_SECRET);
    char m1[POOL_SCRAM_MSG_MAX], m2[POOL_SCRAM_MSG_MAX], smsg[POOL_SCRAM_MSG_MAX];
    cr_assert_eq(pool_scram_client_first(&c1, m1, sizeof(m1)), 3 + 5 + 24);
    cr_assert_eq(pool_scram_client_first(&c2, m2, sizeof(m2)), 3 + 5 + 24);
    cr_expect_str_neq(m1, m2);
    cr_expect_eq(strncmp(m1, "n,,n=,r=", 8), 0);

    int n = pool_scram_server_first(&s, &sec, m1, strlen(m1), smsg, sizeof(smsg));
    cr_assert_gt(n, 0);
    cr_expect_eq(strncmp(smsg + 2, m1 + 8, 24), 0, "server nonce extends the client's");
    cr_expect_eq(smsg[2 + 24 + 24], ',', "24 characters of server nonce: %s", smsg);
    cr_assert_eq(pool_scram_client_server_first(&c1, smsg, strlen(smsg)), 0);
    uint8_t salted[32];
    cr_assert_eq(
        pool_scram_salted_password("correct horse", c1.salt, c1.salt_len, c1.iterations, salted),
        0);
    cr_assert_eq(pool_scram_client_set_salted(&c1, salted), 0);
    cr_assert_gt(pool_scram_client_final(&c1, m1, sizeof(m1)), 0);
    cr_assert_eq(pool_scram_server_final(&s, m1, strlen(m1), smsg, sizeof(smsg)),
                 POOL_SCRAM_FINAL_SIZE - 1);
    cr_expect_eq(pool_scram_client_verify(&c1, smsg, strlen(smsg)), 0);
}

Test(pool_auth, pass_through_logs_in_with_the_recovered_client_key)
{
    pool_scram_secret sec = parse_secret(HORSE_SECRET);
    char cmsg[POOL_SCRAM_MSG_MAX], smsg[POOL_SCRAM_MSG_MAX];
    uint8_t salted[32];

    /* a client logs in to the pooler with its password */
    pool_scram_client c;
    pool_scram_server s;
    cr_assert_gt(pool_scram_client_first(&c, cmsg, sizeof(cmsg)), 0);
    cr_assert_gt(pool_scram_server_first(&s, &sec, cmsg, strlen(cmsg), smsg, sizeof(smsg)), 0);
    cr_assert_eq(pool_scram_client_server_first(&c, smsg, strlen(smsg)), 0);
    cr_assert_eq(
        pool_scram_salted_password("correct horse", c.salt, c.salt_len, c.iterations, salted), 0);
    cr_assert_eq(pool_scram_client_set_salted(&c, salted), 0);
    cr_assert_gt(pool_scram_client_final(&c, cmsg, sizeof(cmsg)), 0);
    cr_assert_gt(pool_scram_server_final(&s, cmsg, strlen(cmsg), smsg, sizeof(smsg)), 0);
    cr_assert(s.have_client_key);

    /* the pooler logs in to "PostgreSQL" (a fresh server with the same secret) with the
     * recovered ClientKey and the secret's ServerKey, never knowing the password */
    pool_scram_client pc;
    pool_scram_server pg;
    cr_assert_gt(pool_scram_client_first(&pc, cmsg, sizeof(cmsg)), 0);
    cr_assert_gt(pool_scram_server_first(&pg, &sec, cmsg, strlen(cmsg), smsg, sizeof(smsg)), 0);
    cr_assert_eq(pool_scram_client_server_first(&pc, smsg, strlen(smsg)), 0);
    pool_scram_client_set_keys(&pc, s.client_key, sec.server_key);
    cr_assert_gt(pool_scram_client_final(&pc, cmsg, sizeof(cmsg)), 0);
    cr_assert_gt(pool_scram_server_final(&pg, cmsg, strlen(cmsg), smsg, sizeof(smsg)), 0);
    cr_expect_eq(memcmp(pg.client_key, s.client_key, 32), 0);
    cr_expect_eq(pool_scram_client_verify(&pc, smsg, strlen(smsg)), 0);
}

Test(pool_auth, wrong_password_is_rejected_with_eacces)
{
    pool_scram_secret sec = parse_secret(HORSE_SECRET);
    char cmsg[POOL_SCRAM_MSG_MAX], smsg[POOL_SCRAM_MSG_MAX];
    uint8_t salted[32];
    pool_scram_client c;
    pool_scram_server s;
    cr_assert_gt(pool_scram_client_first(&c, cmsg, sizeof(cmsg)), 0);
    cr_assert_gt(pool_scram_server_first(&s, &sec, cmsg, strlen(cmsg), smsg, sizeof(smsg)), 0);
    cr_assert_eq(pool_scram_client_server_first(&c, smsg, strlen(smsg)), 0);
    cr_assert_eq(
        pool_scram_salted_password("incorrect horse", c.salt, c.salt_len, c.iterations, salted), 0);
    cr_assert_eq(pool_scram_client_set_salted(&c, salted), 0);
    cr_assert_gt(pool_scram_client_final(&c, cmsg, sizeof(cmsg)), 0);
    cr_expect_eq(pool_scram_server_final(&s, cmsg, strlen(cmsg), smsg, sizeof(smsg)), -EACCES);
    cr_expect_not(s.have_client_key);
    cr_expect_eq(smsg[0], '\0');
    /* one try only: the same exchange does not accept a second final */
    cr_expect_eq(pool_scram_server_final(&s, cmsg, strlen(cmsg), smsg, sizeof(smsg)), -EINVAL);
}

Test(pool_auth, client_rejects_a_server_that_does_not_know_the_secret)
{
    pool_scram_client c;
    char cmsg[POOL_SCRAM_MSG_MAX];
    cr_assert_eq(client_server_first_rc(&c, "r=" HORSE_CNONCE HORSE_SNONCE
                                            ",s=MDEyMzQ1Njc4OWFiY2RlZg==,i=1000"),
                 0);
    pool_scram_secret sec = parse_secret(HORSE_SECRET);
    uint8_t client_key[32] = {0};
    pool_scram_client_set_keys(&c, client_key, sec.server_key);
    cr_assert_gt(pool_scram_client_final(&c, cmsg, sizeof(cmsg)), 0);
    const char *forged = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    cr_expect_eq(pool_scram_client_verify(&c, forged, strlen(forged)), -EACCES);
}

Test(pool_auth, client_verify_reports_server_errors_and_malformed_finals)
{
    const char *cases[] = {
        "e=invalid-proof",     "v=", "v=AAAA", "x=abc", "v", "", HORSE_SERVER_FINAL ",",
        HORSE_SERVER_FINAL "x"};
    const int want[] = {-EPERM, -EINVAL, -EINVAL, -EINVAL, -EINVAL, -EINVAL, -EINVAL, -EINVAL};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pool_scram_client c;
        char cmsg[POOL_SCRAM_MSG_MAX];
        cr_assert_eq(client_server_first_rc(&c, "r=" HORSE_CNONCE HORSE_SNONCE
                                                ",s=MDEyMzQ1Njc4OWFiY2RlZg==,i=1000"),
                     0);
        pool_scram_secret sec = parse_secret(HORSE_SECRET);
        pool_scram_client_set_keys(&c, sec.stored_key, sec.server_key);
        cr_assert_gt(pool_scram_client_final(&c, cmsg, sizeof(cmsg)), 0);
        cr_expect_eq(pool_scram_client_verify(&c, cases[i], strlen(cases[i])), want[i], "'%s'",
                     cases[i]);
    }
    /* with an extension after v= it still verifies */
    pool_scram_client c;
    char cmsg[POOL_SCRAM_MSG_MAX];
    cr_assert_eq(client_server_first_rc(&c, "r=" HORSE_CNONCE HORSE_SNONCE
                                            ",s=MDEyMzQ1Njc4OWFiY2RlZg==,i=1000"),
                 0);
    uint8_t salted[32];
    cr_assert_eq(pool_scram_salted_password("correct horse", horse_salt, 16, 1000, salted), 0);
    cr_assert_eq(pool_scram_client_set_salted(&c, salted), 0);
    cr_assert_gt(pool_scram_client_final(&c, cmsg, sizeof(cmsg)), 0);
    const char *ext = HORSE_SERVER_FINAL ",x=future";
    cr_expect_eq(pool_scram_client_verify(&c, ext, strlen(ext)), 0);
}

Test(pool_auth, server_first_rejects_malformed_client_first)
{
    struct {
        const char *msg;
        int rc;
    } cases[] = {
        {"", -EINVAL},
        {"n", -EINVAL},
        {"n,", -EINVAL},
        {"n,,", -EINVAL},
        {"n,,n=", -EINVAL},
        {"n,,n=,", -EINVAL},
        {"n,,n=,r=", -EINVAL},
        {"n,,n=,r", -EINVAL},
        {"n,,r=abc", -EINVAL},        /* no user name */
        {"n,,n=,x=abc", -EINVAL},     /* no nonce */
        {"n,,n=,r=abc,", -EINVAL},    /* trailing comma */
        {"n,,n=,r=abc,,", -EINVAL},   /* empty extension */
        {"n,,n=,r=abc,1=x", -EINVAL}, /* not an extension */
        {"n,,n=,r=a\x7f"
         "c",
         -EINVAL},                      /* nonce not printable */
        {"n,,n=,r=a c", -EINVAL},       /* nonce with a blank */
        {"x,,n=,r=abc", -EINVAL},       /* unknown cbind flag */
        {"nn,,n=,r=abc", -EINVAL},      /* unknown cbind flag */
        {"n,x,n=,r=abc", -EINVAL},      /* not an authzid */
        {"n,a=bob,n=,r=abc", -ENOTSUP}, /* authzid */
        {"p=tls-server-end-point,,n=,r=abc", -ENOTSUP},
        {"p,,n=,r=abc", -EINVAL},
        {"n,,m=x,n=,r=abc", -ENOTSUP}, /* mandatory extension */
        {"n,,n=,r=abc", 0},
        {"y,,n=,r=abc", 0}, /* we offer no -PLUS: fine */
        {"n,,n=user,r=abc,x=ext", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = server_first_rc(cases[i].msg, strlen(cases[i].msg));
        if (cases[i].rc == 0)
            cr_expect_gt(rc, 0, "'%s': %d", cases[i].msg, rc);
        else
            cr_expect_eq(rc, cases[i].rc, "'%s': %d", cases[i].msg, rc);
    }
    /* an embedded NUL, and a length that stops short of the nonce */
    cr_expect_eq(server_first_rc("n,,n=,r=ab\0c", 12), -EINVAL);
    cr_expect_eq(server_first_rc("n,,n=,r=abc", 6), -EINVAL);
    cr_expect_eq(server_first_rc(NULL, 0), -EINVAL);
    /* oversized: a message, a nonce */
    static char big[POOL_SCRAM_MSG_MAX + 16];
    memset(big, 'a', sizeof(big) - 1);
    memcpy(big, "n,,n=,r=", 8);
    cr_expect_eq(server_first_rc(big, strlen(big)), -EINVAL);
    big[8 + POOL_SCRAM_NONCE_MAX] = '\0';
    cr_expect_eq(server_first_rc(big, strlen(big)), -EINVAL);
}

Test(pool_auth, server_first_out_buffer_too_small_is_enospc)
{
    pool_scram_secret sec = parse_secret(HORSE_SECRET);
    pool_scram_server s;
    char out[16];
    memset(out, 'X', sizeof(out));
    const char *cf = "n,,n=,r=abc";
    cr_expect_eq(pool_scram_server_first(&s, &sec, cf, strlen(cf), out, sizeof(out)), -ENOSPC);
    cr_expect_eq(out[0], '\0');
    cr_expect_eq(out[15], 'X');
    /* and the exchange cannot go on */
    char smsg[POOL_SCRAM_MSG_MAX];
    cr_expect_eq(pool_scram_server_final(&s, HORSE_CLIENT_FINAL, strlen(HORSE_CLIENT_FINAL), smsg,
                                         sizeof(smsg)),
                 -EINVAL);
}

Test(pool_auth, server_final_rejects_malformed_client_final)
{
    struct {
        const char *msg;
        int rc;
    } cases[] = {
        {"", -EINVAL},
        {"c=biws", -EINVAL},
        {"c=biws,r=" HORSE_CNONCE HORSE_SNONCE, -EINVAL}, /* no proof */
        {"c=biws,r=" HORSE_CNONCE HORSE_SNONCE ",p=", -EINVAL},
        {"c=biws,r=" HORSE_CNONCE HORSE_SNONCE ",p=7zTf", -EINVAL}, /* short proof */
        {"c=biws,r=" HORSE_CNONCE HORSE_SNONCE ",p=7zTf+rz+EbN7PCKe0YaSR0DYrzGGEu8aO1qO20/OJAI",
         -EINVAL}, /* bad base64 */
        {"c=biws,r=" HORSE_CNONCE HORSE_SNONCE ",p=7zTf+rz+EbN7PCKe0YaSR0DYrzGGEu8aO1qO20/OJAIAAAA",
         -EINVAL}, /* long proof */
        {HORSE_CLIENT_FINAL ",x=after", -EINVAL},
        {HORSE_CLIENT_FINAL ",", -EINVAL},
        /* channel binding that is not our gs2 header "n,,": "y,,", "p=..", garbage */
        {"c=eSws,r=" HORSE_CNONCE HORSE_SNONCE ",p=7zTf+rz+EbN7PCKe0YaSR0DYrzGGEu8aO1qO20/OJAI=",
         -EINVAL},
        {"c=cD10bHMtdW5pcXVlLCw=,r=" HORSE_CNONCE HORSE_SNONCE
         ",p=7zTf+rz+EbN7PCKe0YaSR0DYrzGGEu8aO1qO20/OJAI=",
         -EINVAL},
        {"c=biw,r=" HORSE_CNONCE HORSE_SNONCE ",p=7zTf+rz+EbN7PCKe0YaSR0DYrzGGEu8aO1qO20/OJAI=",
         -EINVAL},
        {"c=,r=" HORSE_CNONCE HORSE_SNONCE ",p=7zTf+rz+EbN7PCKe0YaSR0DYrzGGEu8aO1qO20/OJAI=",
         -EINVAL},
        /* nonce: client's only, truncated, extended, missing */
        {"c=biws,r=" HORSE_CNONCE ",p=7zTf+rz+EbN7PCKe0YaSR0DYrzGGEu8aO1qO20/OJAI=", -EINVAL},
        {"c=biws,r=" HORSE_CNONCE "3rfcNHYJY1ZVvWVs7", -EINVAL},
        {"c=biws,r=" HORSE_CNONCE HORSE_SNONCE "x,p=7zTf+rz+EbN7PCKe0YaSR0DYrzGGEu8aO1qO20/OJAI=",
         -EINVAL},
        {"c=biws,p=7zTf+rz+EbN7PCKe0YaSR0DYrzGGEu8aO1qO20/OJAI=", -EINVAL},
        /* order */
        {"r=" HORSE_CNONCE HORSE_SNONCE ",c=biws,p=7zTf+rz+EbN7PCKe0YaSR0DYrzGGEu8aO1qO20/OJAI=",
         -EINVAL},
        /* a proof that decodes but is wrong */
        {"c=biws,r=" HORSE_CNONCE HORSE_SNONCE ",p=8zTf+rz+EbN7PCKe0YaSR0DYrzGGEu8aO1qO20/OJAI=",
         -EACCES},
        /* an extension changes the AuthMessage: the proof no longer verifies */
        {"c=biws,r=" HORSE_CNONCE HORSE_SNONCE
         ",x=1,p=7zTf+rz+EbN7PCKe0YaSR0DYrzGGEu8aO1qO20/OJAI=",
         -EACCES},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_expect_eq(horse_final(cases[i].msg), cases[i].rc, "'%s'", cases[i].msg);
    cr_expect_eq(horse_final(HORSE_CLIENT_FINAL), (int)strlen(HORSE_SERVER_FINAL));
}

Test(pool_auth, server_final_checks_order_nul_and_buffer)
{
    pool_scram_server s;
    char out[POOL_SCRAM_MSG_MAX];
    memset(&s, 0, sizeof(s));
    cr_expect_eq(pool_scram_server_final(&s, HORSE_CLIENT_FINAL, strlen(HORSE_CLIENT_FINAL), out,
                                         sizeof(out)),
                 -EINVAL, "before server_first");

    server_started(&s, HORSE_SECRET, "n,,n=,r=" HORSE_CNONCE, HORSE_SNONCE);
    cr_expect_eq(pool_scram_server_final(&s, HORSE_CLIENT_FINAL, strlen(HORSE_CLIENT_FINAL), out,
                                         POOL_SCRAM_FINAL_SIZE - 1),
                 -ENOSPC);

    server_started(&s, HORSE_SECRET, "n,,n=,r=" HORSE_CNONCE, HORSE_SNONCE);
    char msg[256];
    size_t len = strlen(HORSE_CLIENT_FINAL);
    memcpy(msg, HORSE_CLIENT_FINAL, len);
    msg[7] = '\0';
    cr_expect_eq(pool_scram_server_final(&s, msg, len, out, sizeof(out)), -EINVAL);

    /* a length short of the whole message is a truncated message */
    server_started(&s, HORSE_SECRET, "n,,n=,r=" HORSE_CNONCE, HORSE_SNONCE);
    cr_expect_eq(pool_scram_server_final(&s, HORSE_CLIENT_FINAL, len - 1, out, sizeof(out)),
                 -EINVAL);

    /* exactly the needed buffer works, and a second final does not */
    server_started(&s, HORSE_SECRET, "n,,n=,r=" HORSE_CNONCE, HORSE_SNONCE);
    cr_expect_eq(pool_scram_server_final(&s, HORSE_CLIENT_FINAL, len, out, POOL_SCRAM_FINAL_SIZE),
                 POOL_SCRAM_FINAL_SIZE - 1);
    cr_expect_str_eq(out, HORSE_SERVER_FINAL);
    cr_expect_eq(pool_scram_server_final(&s, HORSE_CLIENT_FINAL, len, out, sizeof(out)), -EINVAL);
}

Test(pool_auth, server_accepts_y_flag_with_matching_channel_binding)
{
    pool_scram_server s;
    char out[POOL_SCRAM_MSG_MAX];
    server_started(&s, HORSE_SECRET, "y,,n=,r=" HORSE_CNONCE, HORSE_SNONCE);
    /* c=biws ("n,,") does not match the "y,," the client sent */
    cr_expect_eq(pool_scram_server_final(&s, HORSE_CLIENT_FINAL, strlen(HORSE_CLIENT_FINAL), out,
                                         sizeof(out)),
                 -EINVAL);
    /* with c=eSws the header matches; the proof was made for "biws", so it is wrong */
    server_started(&s, HORSE_SECRET, "y,,n=,r=" HORSE_CNONCE, HORSE_SNONCE);
    const char *fin =
        "c=eSws,r=" HORSE_CNONCE HORSE_SNONCE ",p=7zTf+rz+EbN7PCKe0YaSR0DYrzGGEu8aO1qO20/OJAI=";
    cr_expect_eq(pool_scram_server_final(&s, fin, strlen(fin), out, sizeof(out)), -EACCES);
}

Test(pool_auth, client_server_first_rejects_malformed_messages)
{
    struct {
        const char *msg;
        int rc;
    } cases[] = {
        {"", -EINVAL},
        {"r=" HORSE_CNONCE, -EINVAL}, /* no server part */
        {"r=" HORSE_CNONCE "x", -EINVAL},
        {"r=" HORSE_CNONCE "x,s=MDEyMzQ1Njc4OWFiY2RlZg==", -EINVAL},
        {"r=" HORSE_CNONCE "x,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=", -EINVAL},
        {"r=" HORSE_CNONCE "x,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=0", -EINVAL},
        {"r=" HORSE_CNONCE "x,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=-1", -EINVAL},
        {"r=" HORSE_CNONCE "x,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=10000001", -EINVAL},
        {"r=" HORSE_CNONCE "x,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=4294967297", -EINVAL},
        {"r=" HORSE_CNONCE "x,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=1e3", -EINVAL},
        {"r=" HORSE_CNONCE "x,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=1000,", -EINVAL},
        {"r=" HORSE_CNONCE "x,s=,i=1000", -EINVAL},
        {"r=" HORSE_CNONCE "x,s=MDEyMzQ1Njc4OWFiY2RlZg=,i=1000", -EINVAL},
        {"r=" HORSE_CNONCE "x,s=MDEyMzQ1Njc4O!FiY2RlZg==,i=1000", -EINVAL},
        {"r=" HORSE_CNONCE "x,i=1000,s=MDEyMzQ1Njc4OWFiY2RlZg==", -EINVAL},
        {"r=Xyko+d2lbbFgONRv9qkxdawLx,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=1000", -EINVAL},
        {"r=fyko,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=1000", -EINVAL},
        {"s=MDEyMzQ1Njc4OWFiY2RlZg==,i=1000", -EINVAL},
        {"m=x,r=" HORSE_CNONCE "x,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=1000", -ENOTSUP},
        {"e=other-error", -EINVAL},
        {"r=" HORSE_CNONCE "x,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=10000000", 0},
        {"r=" HORSE_CNONCE "x,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=1,x=ext", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pool_scram_client c;
        cr_expect_eq(client_server_first_rc(&c, cases[i].msg), cases[i].rc, "'%s'", cases[i].msg);
    }
    /* a salt longer than 64 bytes */
    char msg[512], salt64[128];
    uint8_t salt[65] = {0};
    pool_base64_encode(salt, sizeof(salt), salt64, sizeof(salt64));
    snprintf(msg, sizeof(msg), "r=%sx,s=%s,i=1000", HORSE_CNONCE, salt64);
    pool_scram_client c;
    cr_expect_eq(client_server_first_rc(&c, msg), -EINVAL);
    /* an embedded NUL */
    char out[POOL_SCRAM_MSG_MAX];
    cr_assert_gt(pool_scram_client_first_with_nonce(&c, HORSE_CNONCE, out, sizeof(out)), 0);
    const char nul[] = "r=" HORSE_CNONCE "x,s=MDEy\0MzQ1,i=1000";
    cr_expect_eq(pool_scram_client_server_first(&c, nul, sizeof(nul) - 1), -EINVAL);
}

Test(pool_auth, client_calls_out_of_order_fail)
{
    pool_scram_client c;
    char out[POOL_SCRAM_MSG_MAX];
    uint8_t key[32] = {0};
    cr_assert_gt(pool_scram_client_first_with_nonce(&c, HORSE_CNONCE, out, sizeof(out)), 0);
    cr_expect_eq(pool_scram_client_set_salted(&c, key), -EINVAL);
    cr_expect_eq(pool_scram_client_final(&c, out, sizeof(out)), -EINVAL);
    cr_expect_eq(pool_scram_client_verify(&c, HORSE_SERVER_FINAL, strlen(HORSE_SERVER_FINAL)),
                 -EINVAL);
    const char *sf = "r=" HORSE_CNONCE HORSE_SNONCE ",s=MDEyMzQ1Njc4OWFiY2RlZg==,i=1000";
    cr_assert_eq(pool_scram_client_server_first(&c, sf, strlen(sf)), 0);
    cr_expect_eq(pool_scram_client_final(&c, out, sizeof(out)), -EINVAL, "no keys yet");
    cr_expect_eq(pool_scram_client_server_first(&c, sf, strlen(sf)), -EINVAL, "twice");
    pool_scram_client_set_keys(&c, key, key);
    char small[20];
    cr_expect_eq(pool_scram_client_final(&c, small, sizeof(small)), -ENOSPC);
    cr_expect_eq(small[0], '\0');
    cr_expect_gt(pool_scram_client_final(&c, out, sizeof(out)), 0, "retry with room");
}

Test(pool_auth, client_first_validates_nonce_user_and_buffer)
{
    pool_scram_client c;
    char out[POOL_SCRAM_MSG_MAX];
    cr_expect_eq(pool_scram_client_first_with_nonce(&c, "", out, sizeof(out)), -EINVAL);
    cr_expect_eq(pool_scram_client_first_with_nonce(&c, "a,b", out, sizeof(out)), -EINVAL);
    cr_expect_eq(pool_scram_client_first_with_nonce(&c, "a b", out, sizeof(out)), -EINVAL);
    cr_expect_eq(pool_scram_client_first_with_nonce(&c, "abc", out, 11), -ENOSPC);
    cr_expect_eq(pool_scram_client_first_with_nonce(&c, "abc", out, 12), 11);
    cr_expect_str_eq(out, "n,,n=,r=abc");
    cr_expect_eq(pool_scram_client_first(&c, out, 8), -ENOSPC);
    cr_expect_eq(out[0], '\0');
    cr_expect_gt(pool_scram_client_first_ex(&c, "a,b=c", "abc", out, sizeof(out)), 0);
    cr_expect_str_eq(out, "n,,n=a=2Cb=3Dc,r=abc");
}

Test(pool_auth, salted_password_rejects_bad_arguments)
{
    uint8_t out[32];
    cr_expect_eq(pool_scram_salted_password("x", horse_salt, 16, 0, out), -EINVAL);
    cr_expect_eq(
        pool_scram_salted_password("x", horse_salt, 16, POOL_SCRAM_MAX_ITERATIONS + 1, out),
        -EINVAL);
    cr_expect_eq(pool_scram_salted_password("x", horse_salt, 0, 1, out), -EINVAL);
    cr_expect_eq(pool_scram_salted_password(NULL, horse_salt, 16, 1, out), -EINVAL);
    cr_expect_eq(pool_scram_salted_password("x", horse_salt, 16, 1, out), 0);
}

Test(pool_auth, constant_time_compare)
{
    cr_expect(pool_auth_equal("abcd", "abcd", 4));
    cr_expect_not(pool_auth_equal("abcd", "abce", 4));
    cr_expect(pool_auth_equal("abcd", "abce", 3));
}
