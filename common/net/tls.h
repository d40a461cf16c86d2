/* tls.h: TLS configurations and per-connection TLS sessions (mbedTLS 2.28)
 * working on memory buffers.
 *
 * A session never touches a socket. The connection layer hands it the
 * ciphertext it read (ems_tls_feed); mbedTLS's receive callback drains that
 * chunk and answers MBEDTLS_ERR_SSL_WANT_READ when it is empty. Ciphertext
 * that mbedTLS wants to send is appended to an output ems_buf_t owned by the
 * connection, which flushes it with one write. So the session is a pure
 * transformation, easy to test and unable to block.
 *
 * Configurations are reference counted. A session holds a reference to its
 * configuration, so a server can build a new configuration (certificate
 * reload on SIGHUP) and drop its own reference to the old one while existing
 * connections keep using the old one until they close. Each configuration
 * owns its entropy and CTR-DRBG contexts; there is no global TLS state.
 *
 * Errors: every mbedTLS failure is mapped to EMS_ETLS; the mbedTLS text
 * (mbedtls_strerror, and the certificate verification details) is logged at
 * the boundary and kept in the session for ems_tls_error().
 * Only TLS 1.2 is offered (mbedTLS 2.28 has no production TLS 1.3), and only
 * ECDHE suites with AES-GCM or ChaCha20-Poly1305 (forward secrecy, AEAD).
 * Not thread-safe: a configuration and its sessions belong to one loop.
 */
#ifndef EMS_TLS_H
#define EMS_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef struct ems_tls_config ems_tls_config_t;
typedef struct ems_tls ems_tls_t;

/* Builds a server configuration from a PEM certificate chain (leaf first)
 * and its PEM private key (unencrypted). Returns 0 and a configuration with
 * one reference in *out, EMS_ECONFIG when a file cannot be read or parsed or
 * the key does not match the certificate (details logged), EMS_ENOMEM or
 * EMS_ETLS. */
int ems_tls_server_config_new(const char *cert_file, const char *key_file, ems_tls_config_t **out);

/* Builds a client configuration that requires a valid server certificate
 * chained to a CA in `ca_file` (PEM, one or more certificates; NULL means the
 * system bundle /etc/ssl/certs/ca-certificates.crt). Host names are checked
 * per session (ems_tls_new's `hostname`). Errors as above. */
int ems_tls_client_config_new(const char *ca_file, ems_tls_config_t **out);

/* Takes one more reference; returns cfg. */
ems_tls_config_t *ems_tls_config_ref(ems_tls_config_t *cfg);

/* Drops one reference; the last one frees the configuration. NULL is a
 * no-op. */
void ems_tls_config_unref(ems_tls_config_t *cfg);

/* 1 if the configuration is for the server side. */
int ems_tls_config_is_server(const ems_tls_config_t *cfg);

/* Session resumption (RFC 5077 tickets), server side. The server seals
 * each session in a ticket only it can open (AES-256-GCM) and gives it to
 * the client; a client that comes back with it skips the certificate
 * signature and the key exchange (the bulk of a full handshake's CPU).
 * The ticket keys are derived from `secret` (>= 16 bytes) and the current
 * period of `lifetime_s`: processes with the same secret take each other's
 * tickets, also after a restart, and rotate their keys in step; a ticket
 * is taken in its period and the next one, and only while its session is
 * younger than lifetime_s. Returns 0, EMS_EINVAL (a client configuration,
 * secret too short, lifetime 0), EMS_ENOMEM or EMS_ETLS.
 *
 * Clients offer their last session (per configuration, for the same host
 * name) on their next connection by themselves; nothing to set up. */
int ems_tls_config_set_tickets(ems_tls_config_t *cfg, const void *secret, size_t len,
                               unsigned lifetime_s);

typedef struct {
    uint64_t full;            /* handshakes completed in full */
    uint64_t resumed;         /* handshakes that resumed a session */
    uint64_t tickets_issued;  /* server */
    uint64_t tickets_refused; /* server: expired, foreign or forged (a full handshake followed) */
} ems_tls_stats_t;
void ems_tls_config_stats(const ems_tls_config_t *cfg, ems_tls_stats_t *out);

/* Creates a session on `cfg` (takes a reference to it). Ciphertext to send
 * is appended to `out`, which the caller owns and must keep alive for the
 * session's life. `hostname` (client side only, required there) is checked
 * against the server certificate and sent as SNI; it is copied. mbedTLS
 * 2.28 matches DNS names (SAN dNSName or CN) only, never iPAddress SANs:
 * a server reached by IP address must be verified under a DNS name its
 * certificate carries (ems_wsclient_options_t.tls_hostname).
 * Returns 0, EMS_ENOMEM, EMS_EINVAL or EMS_ETLS. */
int ems_tls_new(ems_tls_config_t *cfg, const char *hostname, ems_buf_t *out, ems_tls_t **session);

/* Frees the session and drops its configuration reference. NULL is a no-op. */
void ems_tls_free(ems_tls_t *s);

/* Offers `len` bytes of received ciphertext. The session only keeps a
 * pointer: the bytes must stay valid until ems_tls_handshake/ems_tls_read
 * have returned EMS_EAGAIN (which means every byte was taken) or the caller
 * gives up on the chunk. A new feed replaces any remainder of the old one. */
void ems_tls_feed(ems_tls_t *s, const void *cipher, size_t len);

/* Bytes of the fed chunk not yet taken by mbedTLS. */
size_t ems_tls_fed_left(const ems_tls_t *s);

/* Advances the handshake with the fed bytes. Returns 0 when the handshake
 * is complete, EMS_EAGAIN when more ciphertext is needed (flush `out`
 * first: the handshake may have produced bytes to send), or EMS_ETLS
 * (details in ems_tls_error; for a client this includes certificate
 * verification failures and host name mismatches). */
int ems_tls_handshake(ems_tls_t *s);

/* 1 once the handshake has completed. */
int ems_tls_is_established(const ems_tls_t *s);

/* 1 if the handshake resumed an earlier session instead of a full one. */
int ems_tls_resumed(const ems_tls_t *s);

/* Decrypts into buf. Returns the number of plaintext bytes (> 0), 0 when the
 * peer sent close_notify (end of stream), EMS_EAGAIN when the fed ciphertext
 * holds no complete record, or EMS_ETLS. */
int ems_tls_read(ems_tls_t *s, void *buf, size_t len);

/* Encrypts all `len` bytes and appends the records to `out`. Only after the
 * handshake. Returns 0, EMS_ENOSPC when `out` would pass its cap (some
 * records may already have been appended: treat the session as broken),
 * or EMS_ETLS. */
int ems_tls_write(ems_tls_t *s, const void *data, size_t len);

/* Appends a close_notify alert to `out`. Returns 0 or EMS_ETLS. */
int ems_tls_close_notify(ems_tls_t *s);

/* Text of the last failure ("" if none). Valid while the session lives. */
const char *ems_tls_error(const ems_tls_t *s);

#endif
