/* keyline: the store's schema, one list of steps for every driver (store_db.h).
 *
 * Step i takes a store from version i to i + 1; step 0 creates version 1. A new store runs
 * every step in one transaction; an older one runs the missing steps, one transaction each
 * (SQLite stores written by earlier versions of keyline open and are brought forward). Each
 * step carries its SQLite and its PostgreSQL DDL (types: INTEGER -> BIGINT, BLOB -> BYTEA; a
 * refusing trigger calls kl_refuse()) and optionally a function run after the DDL in the same
 * transaction (a data migration written with the store's statements, like st_audit_baseline).
 *
 * To add data: append a step (never edit a released one), keep the version's comment, add a
 * migration test in tests/unit/store (HACKING.md "Store data"). The guard-rail triggers are
 * against mistakes, not against an attacker (who can drop them): the hash chain, the audit head
 * and the signed checkpoints are what detect tampering. */
#include "store_db.h"

/* ---- SQLite ---- */

/* Version 2. Claims are coordination between live processes, not records: rows come and go. */
#define SQ_CLAIMS_TABLE                                                                            \
    "CREATE TABLE claims ("                                                                        \
    " device_id TEXT PRIMARY KEY NOT NULL,"                                                        \
    " instance TEXT NOT NULL,"                                                                     \
    " host TEXT NOT NULL,"                                                                         \
    " pid INTEGER NOT NULL,"                                                                       \
    " place TEXT NOT NULL,"                                                                        \
    " expires INTEGER NOT NULL);"

/* Version 3: enrollment requests held for approval. */
#define SQ_REQUESTS_TABLE                                                                          \
    "CREATE TABLE requests ("                                                                      \
    " id INTEGER PRIMARY KEY,"                                                                     \
    " label TEXT NOT NULL,"                                                                        \
    " csr_hash TEXT NOT NULL,"                                                                     \
    " csr BLOB NOT NULL,"                                                                          \
    " issuer TEXT NOT NULL,"                                                                       \
    " template TEXT NOT NULL,"                                                                     \
    " device_id TEXT,"                                                                             \
    " requester TEXT NOT NULL,"                                                                    \
    " subject TEXT NOT NULL,"                                                                      \
    " status TEXT NOT NULL CHECK (status IN ('pending','approved','rejected')),"                   \
    " cert_serial TEXT,"                                                                           \
    " reason TEXT,"                                                                                \
    " created INTEGER NOT NULL,"                                                                   \
    " decided INTEGER,"                                                                            \
    " UNIQUE (label, csr_hash));"                                                                  \
    "CREATE TRIGGER requests_no_delete BEFORE DELETE ON requests"                                  \
    " BEGIN SELECT RAISE(ABORT, 'requests are never deleted'); END;"

/* Version 4: the latest signed CRL of each issuer (served without the issuer's key). */
#define SQ_CRLS_TABLE                                                                              \
    "CREATE TABLE crls ("                                                                          \
    " issuer TEXT PRIMARY KEY NOT NULL,"                                                           \
    " number INTEGER NOT NULL,"                                                                    \
    " this_update INTEGER NOT NULL,"                                                               \
    " next_update INTEGER NOT NULL,"                                                               \
    " der BLOB NOT NULL,"                                                                          \
    " created INTEGER NOT NULL);"

/* Version 6: the audit key's public half and the signed checkpoints of the chain (one key per
 * store; the key row is written with the first checkpoint). The triggers are guard rails only:
 * the signatures are what detect a rewrite. */
#define SQ_AUDIT_CP_TABLES                                                                         \
    "CREATE TABLE audit_key ("                                                                     \
    " id INTEGER PRIMARY KEY CHECK (id = 1),"                                                      \
    " label TEXT NOT NULL,"                                                                        \
    " spki BLOB NOT NULL,"                                                                         \
    " created INTEGER NOT NULL);"                                                                  \
    "CREATE TABLE audit_checkpoints ("                                                             \
    " seq INTEGER PRIMARY KEY,"                                                                    \
    " hash TEXT NOT NULL,"                                                                         \
    " ts INTEGER NOT NULL,"                                                                        \
    " sig BLOB NOT NULL);"                                                                         \
    "CREATE TRIGGER audit_key_no_update BEFORE UPDATE ON audit_key"                                \
    " BEGIN SELECT RAISE(ABORT, 'the audit key is never changed'); END;"                           \
    "CREATE TRIGGER audit_key_no_delete BEFORE DELETE ON audit_key"                                \
    " BEGIN SELECT RAISE(ABORT, 'the audit key is never changed'); END;"                           \
    "CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints"                \
    " BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;"                        \
    "CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints"                \
    " BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;"

/* Version 1. */
#define SQ_BASE_TABLES                                                                             \
    "CREATE TABLE cas ("                                                                           \
    " label TEXT PRIMARY KEY NOT NULL,"                                                            \
    " template TEXT,"                                                                              \
    " parent TEXT REFERENCES cas(label),"                                                          \
    " key_type TEXT,"                                                                              \
    " der BLOB,"                                                                                   \
    " status TEXT NOT NULL DEFAULT 'active',"                                                      \
    " created INTEGER NOT NULL);"                                                                  \
    "CREATE TABLE certs ("                                                                         \
    " id INTEGER PRIMARY KEY," /* issue (reservation) order */                                     \
    " serial TEXT UNIQUE NOT NULL,"                                                                \
    " status TEXT NOT NULL CHECK (status IN"                                                       \
    "  ('reserved','pending','valid','revoked','failed')),"                                        \
    " issuer TEXT NOT NULL,"                                                                       \
    " subject TEXT,"                                                                               \
    " template TEXT,"                                                                              \
    " device_id TEXT,"                                                                             \
    " not_before INTEGER,"                                                                         \
    " not_after INTEGER,"                                                                          \
    " der BLOB,"                                                                                   \
    " created INTEGER NOT NULL,"                                                                   \
    " revoked_at INTEGER,"                                                                         \
    " revoke_reason INTEGER,"                                                                      \
    " fail_reason TEXT);"                                                                          \
    "CREATE INDEX certs_issuer_status ON certs(issuer, status);"                                   \
    "CREATE INDEX certs_status_created ON certs(status, created);"                                 \
    "CREATE INDEX certs_device ON certs(device_id);"                                               \
    "CREATE TABLE crl_numbers (issuer TEXT PRIMARY KEY NOT NULL, last INTEGER NOT NULL);"          \
    "CREATE TABLE revocation_epochs (issuer TEXT PRIMARY KEY NOT NULL, epoch INTEGER NOT NULL);"   \
    "CREATE TABLE devices ("                                                                       \
    " device_id TEXT PRIMARY KEY NOT NULL,"                                                        \
    " model TEXT,"                                                                                 \
    " cert_serial TEXT,"                                                                           \
    " state TEXT NOT NULL,"                                                                        \
    " detail TEXT,"                                                                                \
    " updated INTEGER NOT NULL);"                                                                  \
    "CREATE TABLE audit ("                                                                         \
    " seq INTEGER PRIMARY KEY,"                                                                    \
    " ts INTEGER NOT NULL,"                                                                        \
    " actor TEXT NOT NULL,"                                                                        \
    " action TEXT NOT NULL,"                                                                       \
    " detail TEXT NOT NULL,"                                                                       \
    " prev_hash TEXT NOT NULL,"                                                                    \
    " hash TEXT NOT NULL);"                                                                        \
    "CREATE TABLE audit_head ("                                                                    \
    " id INTEGER PRIMARY KEY CHECK (id = 1),"                                                      \
    " seq INTEGER NOT NULL,"                                                                       \
    " hash TEXT NOT NULL);"                                                                        \
    "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '" STORE_ZERO_HASH "');"                 \
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit"                                        \
    " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"                             \
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit"                                        \
    " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"                             \
    "CREATE TRIGGER certs_no_delete BEFORE DELETE ON certs"                                        \
    " BEGIN SELECT RAISE(ABORT, 'certificate rows are never deleted'); END;"                       \
    "CREATE TRIGGER certs_serial_fixed BEFORE UPDATE OF serial ON certs"                           \
    " BEGIN SELECT RAISE(ABORT, 'a serial number never changes'); END;"

/* ---- PostgreSQL (the same tables; cas and devices get an id for their listing order) ---- */

#define PG_REFUSE(name, when, table, msg)                                                          \
    "CREATE TRIGGER " name " BEFORE " when " ON " table " FOR EACH ROW"                            \
    " EXECUTE FUNCTION kl_refuse('" msg "');"

#define PG_BASE_TABLES                                                                             \
    "CREATE FUNCTION kl_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"                     \
    " RAISE EXCEPTION USING MESSAGE = TG_ARGV[0], ERRCODE = 'integrity_constraint_violation';"     \
    " END $$;"                                                                                     \
    "CREATE TABLE cas ("                                                                           \
    " label TEXT PRIMARY KEY NOT NULL,"                                                            \
    " template TEXT,"                                                                              \
    " parent TEXT REFERENCES cas(label),"                                                          \
    " key_type TEXT,"                                                                              \
    " der BYTEA,"                                                                                  \
    " status TEXT NOT NULL DEFAULT 'active',"                                                      \
    " created BIGINT NOT NULL,"                                                                    \
    " id BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE);"                                         \
    "CREATE TABLE certs ("                                                                         \
    " id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"                                     \
    " serial TEXT UNIQUE NOT NULL,"                                                                \
    " status TEXT NOT NULL CHECK (status IN"                                                       \
    "  ('reserved','pending','valid','revoked','failed')),"                                        \
    " issuer TEXT NOT NULL,"                                                                       \
    " subject TEXT,"                                                                               \
    " template TEXT,"                                                                              \
    " device_id TEXT,"                                                                             \
    " not_before BIGINT,"                                                                          \
    " not_after BIGINT,"                                                                           \
    " der BYTEA,"                                                                                  \
    " created BIGINT NOT NULL,"                                                                    \
    " revoked_at BIGINT,"                                                                          \
    " revoke_reason BIGINT,"                                                                       \
    " fail_reason TEXT);"                                                                          \
    "CREATE INDEX certs_issuer_status ON certs(issuer, status);"                                   \
    "CREATE INDEX certs_status_created ON certs(status, created);"                                 \
    "CREATE INDEX certs_device ON certs(device_id);"                                               \
    "CREATE TABLE crl_numbers (issuer TEXT PRIMARY KEY NOT NULL, last BIGINT NOT NULL);"           \
    "CREATE TABLE revocation_epochs (issuer TEXT PRIMARY KEY NOT NULL, epoch BIGINT NOT NULL);"    \
    "CREATE TABLE devices ("                                                                       \
    " device_id TEXT PRIMARY KEY NOT NULL,"                                                        \
    " model TEXT,"                                                                                 \
    " cert_serial TEXT,"                                                                           \
    " state TEXT NOT NULL,"                                                                        \
    " detail TEXT,"                                                                                \
    " updated BIGINT NOT NULL,"                                                                    \
    " id BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE);"                                         \
    "CREATE INDEX devices_cert ON devices(cert_serial);"                                           \
    "CREATE TABLE audit ("                                                                         \
    " seq BIGINT PRIMARY KEY,"                                                                     \
    " ts BIGINT NOT NULL,"                                                                         \
    " actor TEXT NOT NULL,"                                                                        \
    " action TEXT NOT NULL,"                                                                       \
    " detail TEXT NOT NULL,"                                                                       \
    " prev_hash TEXT NOT NULL,"                                                                    \
    " hash TEXT NOT NULL);"                                                                        \
    "CREATE TABLE audit_head ("                                                                    \
    " id BIGINT PRIMARY KEY CHECK (id = 1),"                                                       \
    " seq BIGINT NOT NULL,"                                                                        \
    " hash TEXT NOT NULL);"                                                                        \
    "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '" STORE_ZERO_HASH                       \
    "');" PG_REFUSE("audit_no_update", "UPDATE", "audit", "the audit log is append-only")          \
        PG_REFUSE("audit_no_delete", "DELETE", "audit", "the audit log is append-only") PG_REFUSE( \
            "certs_no_delete", "DELETE", "certs",                                                  \
            "certificate rows are never deleted") "CREATE TRIGGER certs_serial_fixed BEFORE "      \
                                                  "UPDATE OF serial ON certs FOR EACH ROW"         \
                                                  " WHEN (OLD.serial IS DISTINCT FROM NEW.serial)" \
                                                  " EXECUTE FUNCTION kl_refuse('a serial number "  \
                                                  "never changes');"

#define PG_CLAIMS_TABLE                                                                            \
    "CREATE TABLE claims ("                                                                        \
    " device_id TEXT PRIMARY KEY NOT NULL,"                                                        \
    " instance TEXT NOT NULL,"                                                                     \
    " host TEXT NOT NULL,"                                                                         \
    " pid BIGINT NOT NULL,"                                                                        \
    " place TEXT NOT NULL,"                                                                        \
    " expires BIGINT NOT NULL);"

#define PG_REQUESTS_TABLE                                                                          \
    "CREATE TABLE requests ("                                                                      \
    " id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"                                     \
    " label TEXT NOT NULL,"                                                                        \
    " csr_hash TEXT NOT NULL,"                                                                     \
    " csr BYTEA NOT NULL,"                                                                         \
    " issuer TEXT NOT NULL,"                                                                       \
    " template TEXT NOT NULL,"                                                                     \
    " device_id TEXT,"                                                                             \
    " requester TEXT NOT NULL,"                                                                    \
    " subject TEXT NOT NULL,"                                                                      \
    " status TEXT NOT NULL CHECK (status IN ('pending','approved','rejected')),"                   \
    " cert_serial TEXT,"                                                                           \
    " reason TEXT,"                                                                                \
    " created BIGINT NOT NULL,"                                                                    \
    " decided BIGINT,"                                                                             \
    " UNIQUE (label, csr_hash));" PG_REFUSE("requests_no_delete", "DELETE", "requests",            \
                                            "requests are never deleted")

#define PG_CRLS_TABLE                                                                              \
    "CREATE TABLE crls ("                                                                          \
    " issuer TEXT PRIMARY KEY NOT NULL,"                                                           \
    " number BIGINT NOT NULL,"                                                                     \
    " this_update BIGINT NOT NULL,"                                                                \
    " next_update BIGINT NOT NULL,"                                                                \
    " der BYTEA NOT NULL,"                                                                         \
    " created BIGINT NOT NULL);"

#define PG_AUDIT_CP_TABLES                                                                         \
    "CREATE TABLE audit_key ("                                                                     \
    " id BIGINT PRIMARY KEY CHECK (id = 1),"                                                       \
    " label TEXT NOT NULL,"                                                                        \
    " spki BYTEA NOT NULL,"                                                                        \
    " created BIGINT NOT NULL);"                                                                   \
    "CREATE TABLE audit_checkpoints ("                                                             \
    " seq BIGINT PRIMARY KEY,"                                                                     \
    " hash TEXT NOT NULL,"                                                                         \
    " ts BIGINT NOT NULL,"                                                                         \
    " sig BYTEA NOT NULL);" PG_REFUSE("audit_key_no_update", "UPDATE", "audit_key",                \
                                      "the audit key is never changed")                            \
        PG_REFUSE("audit_key_no_delete", "DELETE", "audit_key", "the audit key is never changed")  \
            PG_REFUSE("audit_checkpoints_no_update", "UPDATE", "audit_checkpoints",                \
                      "audit checkpoints are append-only")                                         \
                PG_REFUSE("audit_checkpoints_no_delete", "DELETE", "audit_checkpoints",            \
                          "audit checkpoints are append-only")

/* Version 7: firmware image signings (keyline-ca sign-image, store_image.c), never changed. */
#define SQ_IMAGES_TABLE                                                                            \
    "CREATE TABLE images ("                                                                        \
    " id INTEGER PRIMARY KEY,"                                                                     \
    " sha256 TEXT NOT NULL,"                                                                       \
    " format TEXT NOT NULL CHECK (format IN ('mcuboot','cms')),"                                   \
    " version TEXT NOT NULL,"                                                                      \
    " security_counter INTEGER,"                                                                   \
    " key_label TEXT NOT NULL,"                                                                    \
    " key_serial TEXT NOT NULL,"                                                                   \
    " key_hash TEXT NOT NULL,"                                                                     \
    " size INTEGER NOT NULL,"                                                                      \
    " actor TEXT NOT NULL,"                                                                        \
    " created INTEGER NOT NULL);"                                                                  \
    "CREATE INDEX images_sha256 ON images(sha256);"                                                \
    "CREATE TRIGGER images_no_update BEFORE UPDATE ON images"                                      \
    " BEGIN SELECT RAISE(ABORT, 'image signings are never changed'); END;"                         \
    "CREATE TRIGGER images_no_delete BEFORE DELETE ON images"                                      \
    " BEGIN SELECT RAISE(ABORT, 'image signings are never deleted'); END;"
#define PG_IMAGES_TABLE                                                                            \
    "CREATE TABLE images ("                                                                        \
    " id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"                                     \
    " sha256 TEXT NOT NULL,"                                                                       \
    " format TEXT NOT NULL CHECK (format IN ('mcuboot','cms')),"                                   \
    " version TEXT NOT NULL,"                                                                      \
    " security_counter BIGINT,"                                                                    \
    " key_label TEXT NOT NULL,"                                                                    \
    " key_serial TEXT NOT NULL,"                                                                   \
    " key_hash TEXT NOT NULL,"                                                                     \
    " size BIGINT NOT NULL,"                                                                       \
    " actor TEXT NOT NULL,"                                                                        \
    " created BIGINT NOT NULL);"                                                                   \
    "CREATE INDEX images_sha256 ON images(sha256);" PG_REFUSE(                                     \
        "images_no_update", "UPDATE", "images", "image signings are never changed")                \
        PG_REFUSE("images_no_delete", "DELETE", "images", "image signings are never deleted")
/* Version 10. Serials are upper-case hex of whole octets, no leading zero octet: (length, text)
 * is numeric order. */
#define SQ_REVOKED_INDEXES                                                                         \
    "CREATE INDEX IF NOT EXISTS certs_revoked ON certs(issuer, length(serial), serial, "           \
    "revoked_at,"                                                                                  \
    " revoke_reason) WHERE status = 'revoked';"                                                    \
    "CREATE INDEX IF NOT EXISTS devices_cert_serial ON devices(cert_serial);"
#define PG_REVOKED_INDEXES                                                                         \
    "CREATE INDEX IF NOT EXISTS certs_revoked ON certs(issuer, (length(serial)), serial, "         \
    "revoked_at,"                                                                                  \
    " revoke_reason) WHERE status = 'revoked';"                                                    \
    "CREATE INDEX IF NOT EXISTS devices_cert_serial ON devices(cert_serial);"

/* Version 9: quorum ceremonies (ca/ceremony_store.h): the officers, whose certificates are kept
 * for ever (a name or key is never reused), the ceremonies with their exact request bytes, and
 * the officers' signatures over them. */
#define SQ_CEREMONY_TABLES                                                                         \
    "CREATE TABLE officers ("                                                                      \
    " name TEXT PRIMARY KEY NOT NULL,"                                                             \
    " cert BLOB NOT NULL,"                                                                         \
    " key_sha256 TEXT NOT NULL UNIQUE,"                                                            \
    " cert_sha256 TEXT NOT NULL,"                                                                  \
    " status TEXT NOT NULL CHECK (status IN ('active','removed')),"                                \
    " added INTEGER NOT NULL,"                                                                     \
    " removed INTEGER);"                                                                           \
    "CREATE TABLE ceremonies ("                                                                    \
    " id INTEGER PRIMARY KEY,"                                                                     \
    " op TEXT NOT NULL,"                                                                           \
    " nonce TEXT NOT NULL UNIQUE,"                                                                 \
    " request BLOB NOT NULL,"                                                                      \
    " status TEXT NOT NULL CHECK (status IN ('proposed','running','done')),"                       \
    " proposed INTEGER NOT NULL,"                                                                  \
    " proposer TEXT NOT NULL,"                                                                     \
    " note TEXT,"                                                                                  \
    " transcript BLOB);"                                                                           \
    "CREATE TABLE ceremony_approvals ("                                                            \
    " ceremony INTEGER NOT NULL,"                                                                  \
    " officer TEXT NOT NULL,"                                                                      \
    " sig BLOB NOT NULL,"                                                                          \
    " at INTEGER NOT NULL,"                                                                        \
    " PRIMARY KEY (ceremony, officer));"                                                           \
    "CREATE TRIGGER officers_no_delete BEFORE DELETE ON officers"                                  \
    " BEGIN SELECT RAISE(ABORT, 'officers are never deleted'); END;"                               \
    "CREATE TRIGGER ceremonies_no_delete BEFORE DELETE ON ceremonies"                              \
    " BEGIN SELECT RAISE(ABORT, 'ceremonies are never deleted'); END;"
#define PG_CEREMONY_TABLES                                                                         \
    "CREATE TABLE officers ("                                                                      \
    " name TEXT PRIMARY KEY NOT NULL,"                                                             \
    " cert BYTEA NOT NULL,"                                                                        \
    " key_sha256 TEXT NOT NULL UNIQUE,"                                                            \
    " cert_sha256 TEXT NOT NULL,"                                                                  \
    " status TEXT NOT NULL CHECK (status IN ('active','removed')),"                                \
    " added BIGINT NOT NULL,"                                                                      \
    " removed BIGINT);"                                                                            \
    "CREATE TABLE ceremonies ("                                                                    \
    " id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"                                     \
    " op TEXT NOT NULL,"                                                                           \
    " nonce TEXT NOT NULL UNIQUE,"                                                                 \
    " request BYTEA NOT NULL,"                                                                     \
    " status TEXT NOT NULL CHECK (status IN ('proposed','running','done')),"                       \
    " proposed BIGINT NOT NULL,"                                                                   \
    " proposer TEXT NOT NULL,"                                                                     \
    " note TEXT,"                                                                                  \
    " transcript BYTEA);"                                                                          \
    "CREATE TABLE ceremony_approvals ("                                                            \
    " ceremony BIGINT NOT NULL,"                                                                   \
    " officer TEXT NOT NULL,"                                                                      \
    " sig BYTEA NOT NULL,"                                                                         \
    " at BIGINT NOT NULL,"                                                                         \
    " PRIMARY KEY (ceremony, officer));" PG_REFUSE("officers_no_delete", "DELETE", "officers",     \
                                                   "officers are never deleted")                   \
        PG_REFUSE("ceremonies_no_delete", "DELETE", "ceremonies", "ceremonies are never deleted")

/* Matter onboarding data per device (store_matter.c, issue 19): replaced when a device is
 * provisioned again; the setup passcode is never stored here. */
#define SQ_MATTER_TABLE                                                                            \
    "CREATE TABLE matter_onboarding ("                                                             \
    " device_id TEXT PRIMARY KEY NOT NULL,"                                                        \
    " cert_serial TEXT NOT NULL,"                                                                  \
    " discriminator INTEGER NOT NULL CHECK (discriminator BETWEEN 0 AND 4095),"                    \
    " iterations INTEGER NOT NULL CHECK (iterations BETWEEN 1000 AND 100000),"                     \
    " salt BLOB NOT NULL,"                                                                         \
    " verifier BLOB NOT NULL,"                                                                     \
    " updated INTEGER NOT NULL);"
#define PG_MATTER_TABLE                                                                            \
    "CREATE TABLE matter_onboarding ("                                                             \
    " device_id TEXT PRIMARY KEY NOT NULL,"                                                        \
    " cert_serial TEXT NOT NULL,"                                                                  \
    " discriminator BIGINT NOT NULL CHECK (discriminator BETWEEN 0 AND 4095),"                     \
    " iterations BIGINT NOT NULL CHECK (iterations BETWEEN 1000 AND 100000),"                      \
    " salt BYTEA NOT NULL,"                                                                        \
    " verifier BYTEA NOT NULL,"                                                                    \
    " updated BIGINT NOT NULL);"

/* The Matter passcode sealed to a token key, only with [station] matter-keep-passcode = yes
 * (ca/matter_seal.h); NULL otherwise. */
#define SQ_MATTER_PASSCODE "ALTER TABLE matter_onboarding ADD COLUMN passcode_sealed BLOB;"
#define PG_MATTER_PASSCODE "ALTER TABLE matter_onboarding ADD COLUMN passcode_sealed BYTEA;"
/* Production orders (store_order.c): at most `count` certificates of a profile for one
 * station before `expires`; issued is counted in the certificate's insert transaction. */
#define OR_TABLES(INT, BLOB)                                                                       \
    "CREATE TABLE orders ("                                                                        \
    " id TEXT PRIMARY KEY NOT NULL,"                                                               \
    " model TEXT NOT NULL,"                                                                        \
    " station TEXT NOT NULL,"                                                                      \
    " profile TEXT NOT NULL,"                                                                      \
    " count " INT " NOT NULL CHECK (count > 0),"                                                   \
    " issued " INT " NOT NULL DEFAULT 0 CHECK (issued >= 0 AND issued <= count),"                  \
    " expires " INT " NOT NULL,"                                                                   \
    " created " INT " NOT NULL,"                                                                   \
    " created_by TEXT NOT NULL,"                                                                   \
    " state TEXT NOT NULL CHECK (state IN ('open','closed')),"                                     \
    " closed " INT ","                                                                             \
    " closed_by TEXT,"                                                                             \
    " sig " BLOB " NOT NULL);"                                                                     \
    "CREATE INDEX orders_station ON orders (station, profile);"                                    \
    "CREATE TABLE order_certs ("                                                                   \
    " serial TEXT PRIMARY KEY NOT NULL,"                                                           \
    " order_id TEXT NOT NULL REFERENCES orders (id),"                                              \
    " device_id TEXT,"                                                                             \
    " issued " INT " NOT NULL);"                                                                   \
    "CREATE INDEX order_certs_order ON order_certs (order_id);"
#define SQ_ORDER_TABLES                                                                            \
    OR_TABLES("INTEGER", "BLOB")                                                                   \
    "CREATE TRIGGER orders_no_delete BEFORE DELETE ON orders"                                      \
    " BEGIN SELECT RAISE(ABORT, 'production orders are never deleted'); END;"                      \
    "CREATE TRIGGER order_certs_no_delete BEFORE DELETE ON order_certs"                            \
    " BEGIN SELECT RAISE(ABORT, 'the certificates of an order are never deleted'); END;"
#define PG_ORDER_TABLES                                                                            \
    OR_TABLES("BIGINT", "BYTEA")                                                                   \
    PG_REFUSE("orders_no_delete", "DELETE", "orders", "production orders are never deleted")       \
    PG_REFUSE("order_certs_no_delete", "DELETE", "order_certs",                                    \
              "the certificates of an order are never deleted")

/* Version 13: partitioned CRLs ([ca LABEL] crl-partition-size, ca/ca_crlpart.c). The partition
 * of a certificate is recorded in its insert transaction (a certificate without a row: no
 * partition, in its CA's full CRL only), which also counts it against its CA's current
 * partition (at most crl-partition-size certificates each). A partition's CRL reads the rows of
 * its partition alone. Tables of their own (no ALTER TABLE): the step can run again. */
#define CP_TABLES(INT)                                                                             \
    "CREATE TABLE IF NOT EXISTS crl_partitions ("                                                  \
    " issuer TEXT PRIMARY KEY NOT NULL,"                                                           \
    " current " INT " NOT NULL CHECK (current >= 0),"                                              \
    " fill " INT " NOT NULL CHECK (fill >= 0));"                                                   \
    "CREATE TABLE IF NOT EXISTS crl_partition_certs ("                                             \
    " serial TEXT PRIMARY KEY NOT NULL,"                                                           \
    " issuer TEXT NOT NULL,"                                                                       \
    " part " INT " NOT NULL CHECK (part >= 0));"                                                   \
    "CREATE INDEX IF NOT EXISTS crl_partition_certs_part ON crl_partition_certs(issuer, part);"
#define SQ_CRL_PARTITIONS                                                                          \
    CP_TABLES("INTEGER")                                                                           \
    "CREATE TRIGGER IF NOT EXISTS crl_partition_certs_no_delete BEFORE DELETE ON"                  \
    " crl_partition_certs BEGIN SELECT RAISE(ABORT, 'CRL partitions are never changed'); END;"
#define PG_CRL_PARTITIONS                                                                          \
    CP_TABLES("BIGINT")                                                                            \
    "CREATE OR REPLACE TRIGGER crl_partition_certs_no_delete BEFORE DELETE ON crl_partition_certs" \
    " FOR EACH ROW EXECUTE FUNCTION kl_refuse('CRL partitions are never changed');"

/* Version 14: CRLs larger than the store's chunk size (16 MiB, store_crl_chunk_set) in ordered
 * chunks of their own, written in the transaction of their crls row (whose der is then empty):
 * no CRL is bound by the largest value a row holds, and a small CRL stays one row. A table of
 * its own (no ALTER TABLE): the step can run again. */
#define CC_TABLE(INT, BLOB)                                                                        \
    "CREATE TABLE IF NOT EXISTS crl_chunks ("                                                      \
    " issuer TEXT NOT NULL,"                                                                       \
    " number " INT " NOT NULL,"                                                                    \
    " seq " INT " NOT NULL CHECK (seq >= 0),"                                                      \
    " data " BLOB " NOT NULL,"                                                                     \
    " PRIMARY KEY (issuer, seq));"

/* Version 15: the revocation epoch each published CRL's entries were read at, by name and with
 * its number (store_crl_commit): a CRL refused because the published one has its second, read
 * at the same epoch, lists the same entries, so the published one stands for it. A table of
 * its own (no ALTER TABLE): the step can run again. */
#define CE_TABLE(INT)                                                                              \
    "CREATE TABLE IF NOT EXISTS crl_epochs ("                                                      \
    " name TEXT PRIMARY KEY NOT NULL,"                                                             \
    " number " INT " NOT NULL,"                                                                    \
    " epoch " INT " NOT NULL);"

/* Version 16: the audit entries the officer and ceremony checks read (store_ceremony.c: the
 * officer history, a ceremony run's claim inside its write transaction) found through partial
 * indexes holding those entries alone, instead of a scan of a table with an entry per
 * certificate (2M entries: 0.19 s -> under 1 ms per read). Each index's WHERE is the very
 * clause of its query (SQLite uses a partial index only for a query whose WHERE contains the
 * index's terms as written). IF NOT EXISTS: the step can run again. */
#define AUDIT_EVENT_INDEXES                                                                        \
    "CREATE INDEX IF NOT EXISTS audit_officer_events ON audit(seq)"                                \
    " WHERE " AUDIT_OFFICER_EVENTS ";"                                                             \
    "CREATE INDEX IF NOT EXISTS audit_ceremony_events ON audit(seq)"                               \
    " WHERE " AUDIT_CEREMONY_EVENTS ";"

/* Version 17: the distribution point URL of each CRL partition, recorded by the first
 * certificate or CRL that names the partition ([ca] crl-url as it was then): a crl-url change
 * applies from the next partition on, and a partition's CRL names in its
 * issuingDistributionPoint what its certificates name (RFC 5280 5.2.5), whatever the
 * configuration says later. Never changed once written. A table of its own (no ALTER TABLE):
 * the step can run again. */
#define CU_TABLE(INT)                                                                              \
    "CREATE TABLE IF NOT EXISTS crl_partition_urls ("                                              \
    " issuer TEXT NOT NULL,"                                                                       \
    " part " INT " NOT NULL CHECK (part >= 0),"                                                    \
    " url TEXT NOT NULL,"                                                                          \
    " PRIMARY KEY (issuer, part));"
#define SQ_CRL_PARTITION_URLS                                                                      \
    CU_TABLE("INTEGER")                                                                            \
    "CREATE TRIGGER IF NOT EXISTS crl_partition_urls_no_update BEFORE UPDATE ON"                   \
    " crl_partition_urls BEGIN SELECT RAISE(ABORT, 'CRL partitions are never changed'); END;"      \
    "CREATE TRIGGER IF NOT EXISTS crl_partition_urls_no_delete BEFORE DELETE ON"                   \
    " crl_partition_urls BEGIN SELECT RAISE(ABORT, 'CRL partitions are never changed'); END;"
#define PG_CRL_PARTITION_URLS                                                                      \
    CU_TABLE("BIGINT")                                                                             \
    "CREATE OR REPLACE TRIGGER crl_partition_urls_no_change BEFORE UPDATE OR DELETE ON"            \
    " crl_partition_urls FOR EACH ROW EXECUTE FUNCTION kl_refuse('CRL partitions are never "       \
    "changed');"

/* ---- the steps ---- */

const store_schema_step store_schema_steps[] = {
    /* 1: CA records, certificates, CRL numbers, revocation epochs, devices, the audit chain */
    {"create the store", SQ_BASE_TABLES, PG_BASE_TABLES, NULL},
    /* 2: device claims */
    {"add the claims table", SQ_CLAIMS_TABLE, PG_CLAIMS_TABLE, NULL},
    /* 3: enrollment requests held for approval */
    {"add the requests table", SQ_REQUESTS_TABLE, PG_REQUESTS_TABLE, NULL},
    /* 4: the latest signed CRL of each issuer */
    {"add the crls table", SQ_CRLS_TABLE, PG_CRLS_TABLE, NULL},
    /* 5: baselines of the rows an older store holds (nothing on a new store) */
    {"record audit baselines", NULL, NULL, st_audit_baseline},
    /* 6: the audit key and signed checkpoints */
    {"add the audit checkpoint tables", SQ_AUDIT_CP_TABLES, PG_AUDIT_CP_TABLES, NULL},
    /* 7: firmware image signings */
    {"add the images table", SQ_IMAGES_TABLE, PG_IMAGES_TABLE, NULL},
    /* Matter onboarding data (discriminator, salt, iterations, verifier) per device */
    {"add the matter_onboarding table", SQ_MATTER_TABLE, PG_MATTER_TABLE, NULL},
    /* 9: officers and quorum ceremonies */
    {"add the ceremony tables", SQ_CEREMONY_TABLES, PG_CEREMONY_TABLES, NULL},
    /* 10: the revoked certificates of an issuer in serial order (CRLs streamed from the index
     * alone), and a device by its current certificate (revocation marks it) */
    {"index revoked certificates and devices by certificate", SQ_REVOKED_INDEXES,
     PG_REVOKED_INDEXES, NULL},
    /* 11: a Matter device's setup passcode, sealed to a token key (matter-keep-passcode) */
    {"add matter_onboarding.passcode_sealed", SQ_MATTER_PASSCODE, PG_MATTER_PASSCODE, NULL},
    /* 12: production orders and the certificates counted against them */
    {"add the orders tables", SQ_ORDER_TABLES, PG_ORDER_TABLES, NULL},
    /* 13: CRL partitions: a certificate's partition, the fill of each CA's current one */
    {"add CRL partitions", SQ_CRL_PARTITIONS, PG_CRL_PARTITIONS, NULL},
    /* 14: large CRLs in chunks */
    {"add the crl_chunks table", CC_TABLE("INTEGER", "BLOB"), CC_TABLE("BIGINT", "BYTEA"), NULL},
    /* 15: the revocation epoch of each published CRL */
    {"add the crl_epochs table", CE_TABLE("INTEGER"), CE_TABLE("BIGINT"), NULL},
    /* 16: the officer and ceremony entries of the audit log in indexes of their own */
    {"index the officer and ceremony audit entries", AUDIT_EVENT_INDEXES, AUDIT_EVENT_INDEXES,
     NULL},
    /* 17: the distribution point URL of each CRL partition */
    {"add the crl_partition_urls table", SQ_CRL_PARTITION_URLS, PG_CRL_PARTITION_URLS, NULL},
};
const size_t store_schema_nsteps = sizeof store_schema_steps / sizeof store_schema_steps[0];
