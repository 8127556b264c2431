/*
 * NAME
 *	CCarrierShims - OpenSSL macros as functions Swift can call
 * SUMMARY
 *	Swift imports C functions but not function-like macros. OpenSSL spells
 *	several settings we need as macros around SSL_ctrl()/SSL_CTX_ctrl();
 *	each shim here wraps exactly one of them. Every symbol is prefixed
 *	carrier_ so it never collides with a library symbol.
 */
#ifndef CARRIER_SHIMS_H
#define CARRIER_SHIMS_H

#include <openssl/ssl.h>
#include <openssl/bio.h>
#include <openssl/evp.h>

/* SSL_CTX_set_min_proto_version(): TLS1_2_VERSION and up. */
int carrier_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version);

/* SSL_CTX_set_session_cache_mode(). */
long carrier_SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, long mode);

/* SSL_set_tlsext_host_name(): the SNI name a client sends. */
int carrier_SSL_set_tlsext_host_name(SSL *ssl, const char *name);

/* SSL_set_app_data()/SSL_get_app_data(): our connection object. */
int carrier_SSL_set_app_data(SSL *ssl, void *data);
void *carrier_SSL_get_app_data(const SSL *ssl);

/* EVP_EC_gen(): a fresh EC key on the named curve ("P-256"). */
EVP_PKEY *carrier_EVP_EC_gen(const char *curve);

#endif
