/*
 * NAME
 *	shims.c - one function per OpenSSL macro that Swift cannot import
 * DESCRIPTION
 *	See include/CCarrierShims.h. Nothing here has logic of its own.
 */
#include "CCarrierShims.h"

#include <openssl/ec.h>

int carrier_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version)
{
    return (int) SSL_CTX_set_min_proto_version(ctx, version);
}

long carrier_SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, long mode)
{
    return SSL_CTX_set_session_cache_mode(ctx, mode);
}

int carrier_SSL_set_tlsext_host_name(SSL *ssl, const char *name)
{
    return (int) SSL_set_tlsext_host_name(ssl, name);
}

int carrier_SSL_set_app_data(SSL *ssl, void *data)
{
    return SSL_set_app_data(ssl, data);
}

void *carrier_SSL_get_app_data(const SSL *ssl)
{
    return SSL_get_app_data(ssl);
}

EVP_PKEY *carrier_EVP_EC_gen(const char *curve)
{
    return EVP_EC_gen(curve);
}
