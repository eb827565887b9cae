#include "store/migrations.h"

#include <fmt/format.h>

#include "core/clock.h"
#include "core/log.h"

namespace certfleet::store {
namespace {

// Serializes migrations among nodes sharing one PostgreSQL (pg_advisory_xact_lock key).
constexpr int64_t kMigrationLockKey = 0x63657274666c6565;  // "certflee"

constexpr Migration kMigrations[] = {
    {1, "foundation", R"sql(
CREATE TABLE api_tokens (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'reader')),
  secret_hash TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  created_by TEXT NOT NULL,
  last_used_at BIGINT,
  revoked_at BIGINT
);

CREATE TABLE jobs (
  id {{id}},
  kind TEXT NOT NULL,
  payload TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'dead')),
  run_at BIGINT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  max_attempts INTEGER NOT NULL,
  lease_owner TEXT,
  lease_expires_at BIGINT,
  last_error TEXT,
  dedupe_key TEXT UNIQUE,
  progress_done BIGINT NOT NULL DEFAULT 0,
  progress_total BIGINT NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  finished_at BIGINT
);
CREATE INDEX jobs_due ON jobs (state, run_at);
CREATE INDEX jobs_lease ON jobs (state, lease_expires_at);
CREATE INDEX jobs_kind ON jobs (kind, state);

CREATE TABLE schedules (
  name TEXT PRIMARY KEY,
  spec TEXT NOT NULL,
  next_run_at BIGINT NOT NULL,
  last_run_at BIGINT
);

CREATE TABLE audit_log (
  seq BIGINT PRIMARY KEY,
  at BIGINT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  object TEXT NOT NULL,
  details TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);

-- The chain's head, one row: appending locks it, so concurrent appends never fork the chain.
CREATE TABLE audit_head (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  seq BIGINT NOT NULL,
  hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
)sql"},
    {2, "certificates", R"sql(
-- The inventory: every certificate certfleet issued. Lists are served from the indexes,
-- each ending in serial so that pages are stable.
CREATE TABLE certificates (
  serial TEXT PRIMARY KEY,
  fqdn TEXT NOT NULL,
  type TEXT NOT NULL CHECK (type IN ('root', 'intermediate', 'server', 'device')),
  parent_fqdn TEXT NOT NULL,
  issuer_serial TEXT REFERENCES certificates (serial),
  status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
  not_before BIGINT NOT NULL,
  not_after BIGINT NOT NULL,
  fingerprint TEXT NOT NULL UNIQUE,
  certificate_pem TEXT NOT NULL,
  revoked_at BIGINT,
  revocation_reason INTEGER,
  created_at BIGINT NOT NULL,
  created_by TEXT NOT NULL
);
CREATE INDEX certificates_fqdn ON certificates (fqdn);
CREATE INDEX certificates_parent ON certificates (parent_fqdn, serial);
CREATE INDEX certificates_type ON certificates (type, serial);
CREATE INDEX certificates_status ON certificates (status, serial);
CREATE INDEX certificates_expiry ON certificates (not_after, serial);
CREATE INDEX certificates_issuer ON certificates (issuer_serial, status);

-- CAs by fqdn: their key, their current CRL and the hash OCSP requests name them by.
CREATE TABLE cas (
  fqdn TEXT PRIMARY KEY,
  serial TEXT NOT NULL UNIQUE REFERENCES certificates (serial),
  key_ref TEXT NOT NULL,
  key_hash TEXT NOT NULL,
  crl_number BIGINT NOT NULL DEFAULT 0,
  crl_der TEXT,
  crl_this_update BIGINT,
  crl_next_update BIGINT
);
CREATE INDEX cas_key_hash ON cas (key_hash);
CREATE INDEX cas_crl_due ON cas (crl_next_update);

-- The event bus: subscribers (webhooks, workflows) read it in id order.
CREATE TABLE events (
  id {{id}},
  at BIGINT NOT NULL,
  type TEXT NOT NULL,
  payload TEXT NOT NULL
);
CREATE INDEX events_type ON events (type, id);
)sql"},
    {3, "certificate index order", R"sql(
-- Index entries in issuance order. Serials are random, so indexes ending in the serial put
-- each new certificate on a random page; ordered by created_at, new entries append to the
-- end and the certificates committed together share their pages. Lists page in issuance
-- order. The fqdn index holds status and serial: the active-name check reads no table row.
DROP INDEX certificates_fqdn;
CREATE INDEX certificates_fqdn ON certificates (fqdn, status, serial);
DROP INDEX certificates_parent;
CREATE INDEX certificates_parent ON certificates (parent_fqdn, created_at, serial);
DROP INDEX certificates_type;
CREATE INDEX certificates_type ON certificates (type, created_at, serial);
DROP INDEX certificates_status;
CREATE INDEX certificates_status ON certificates (status, created_at, serial);
CREATE INDEX certificates_created ON certificates (created_at, serial);
)sql"},
    {4, "distribution", R"sql(
-- W5: the inbound bucket's objects as last seen, by warehouse and gateway (or SHARED_FILES).
CREATE TABLE distribution_objects (
  object_key TEXT PRIMARY KEY,
  warehouse TEXT NOT NULL,
  gateway_eui TEXT NOT NULL,
  etag TEXT NOT NULL,
  last_modified BIGINT NOT NULL,
  size BIGINT NOT NULL
);
CREATE INDEX distribution_objects_gateway ON distribution_objects (warehouse, gateway_eui);

-- Delivery status per warehouse and gateway (or SHARED_FILES): the seed's EmailGatewayCerts.
-- version grows with every change of the files, so a mail sent for an older version never
-- marks a newer one EMAILED.
CREATE TABLE distribution_records (
  warehouse TEXT NOT NULL,
  gateway_eui TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('PENDING_EMAIL', 'EMAILED', 'FAILED_EMAIL')),
  last_modified BIGINT NOT NULL,
  last_emailed BIGINT,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  version BIGINT NOT NULL DEFAULT 1,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (warehouse, gateway_eui)
);
CREATE INDEX distribution_records_status ON distribution_records (status, warehouse, gateway_eui);

-- Recipients per warehouse and the password of its AES-256 ZIPs (never returned by the API).
CREATE TABLE distribution_warehouses (
  name TEXT PRIMARY KEY,
  recipients TEXT NOT NULL,
  zip_password TEXT,
  updated_at BIGINT NOT NULL,
  updated_by TEXT NOT NULL
);

-- Every mail sent: what it held and to whom.
CREATE TABLE distribution_deliveries (
  id {{id}},
  at BIGINT NOT NULL,
  warehouse TEXT NOT NULL,
  message_id TEXT NOT NULL,
  recipients TEXT NOT NULL,
  subject TEXT NOT NULL,
  zip_name TEXT NOT NULL,
  zip_bytes BIGINT NOT NULL,
  message_bytes BIGINT NOT NULL,
  part INTEGER NOT NULL,
  parts INTEGER NOT NULL,
  gateways TEXT NOT NULL
);
CREATE INDEX distribution_deliveries_warehouse ON distribution_deliveries (warehouse, id);
)sql"},
    {5, "devices", R"sql(
-- W2: devices registered before they first power on, each with the public key its CSR must
-- carry. public_key is the SubjectPublicKeyInfo (DER, base64); key_sha256 its SHA-256 (hex),
-- which a CSR's key is compared with.
CREATE TABLE devices (
  device_id TEXT PRIMARY KEY,
  public_key TEXT NOT NULL,
  key_sha256 TEXT NOT NULL,
  batch TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('registered', 'provisioned', 'disabled')),
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX devices_batch ON devices (batch, device_id);
CREATE INDEX devices_status ON devices (status, device_id);
)sql"},
    {6, "registry", R"sql(
-- W2: the registry. Things, thing types, thing groups, policies and provisioning templates
-- are objects of a kind: a name, a JSON body and `ref`, the one reference lists filter by
-- (a thing's type, a template's CA). Links join two names: a certificate to a thing (state
-- active or superseded, with when a superseded one is due for revocation), a policy to a
-- certificate, a thing to a group, a batch to its provisioning template.
CREATE TABLE registry_objects (
  kind TEXT NOT NULL,
  name TEXT NOT NULL,
  ref TEXT,
  body TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (kind, name)
);
CREATE INDEX registry_objects_ref ON registry_objects (kind, ref, name);
CREATE TABLE registry_links (
  kind TEXT NOT NULL,
  from_name TEXT NOT NULL,
  to_name TEXT NOT NULL,
  state TEXT NOT NULL,
  due_at BIGINT,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (kind, from_name, to_name)
);
CREATE INDEX registry_links_to ON registry_links (kind, to_name, from_name);
CREATE INDEX registry_links_due ON registry_links (kind, due_at) WHERE due_at IS NOT NULL;
)sql"},
    {7, "imports", R"sql(
-- W3: supplier manifests imported into the registry. An import's counts and `position` (the
-- manifest entries done) commit with each batch it writes, so that an interrupted import
-- resumes after its last committed batch. import_rows keeps the entries not imported
-- (rejected, conflict) with the reason. Imported certificates are the supplier's, not
-- certfleet's: they are kept apart from the CA's inventory, by SHA-256 fingerprint (DER as
-- base64). Links name them by `ref`, "import:<import id>:<entry>" zero-padded, which grows in the order
-- they are written, so that the link indexes are appended to rather than written all over
-- as random fingerprints would make them.
CREATE TABLE imports (
  id {{id}},
  supplier TEXT NOT NULL,
  profile TEXT NOT NULL,
  bundle_type TEXT NOT NULL,
  manifest TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
  position BIGINT NOT NULL,
  read_permille BIGINT NOT NULL DEFAULT 0,
  seen BIGINT NOT NULL,
  imported BIGINT NOT NULL,
  already_present BIGINT NOT NULL,
  rejected BIGINT NOT NULL,
  conflicts BIGINT NOT NULL,
  error TEXT,
  created_by TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  started_at BIGINT,
  finished_at BIGINT,
  source TEXT
);
-- An object of the inbound store ("<key> <etag>") is imported once, whichever node sees it.
CREATE UNIQUE INDEX imports_source ON imports (source);
CREATE TABLE import_rows (
  import_id BIGINT NOT NULL,
  idx BIGINT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('rejected', 'conflict')),
  thing_name TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  reason TEXT NOT NULL,
  PRIMARY KEY (import_id, idx)
);
CREATE INDEX import_rows_status ON import_rows (import_id, status, idx);
CREATE TABLE imported_certificates (
  fingerprint TEXT PRIMARY KEY,
  ref TEXT NOT NULL UNIQUE,
  source TEXT NOT NULL,
  thing_name TEXT NOT NULL,
  certificate TEXT NOT NULL,
  import_id BIGINT NOT NULL,
  created_at BIGINT NOT NULL
);
)sql"},
    {8, "import batches", R"sql(
-- W3: an import writes several batches at once (bulk.writers), which may commit in any
-- order; each records the manifest entries it covers (0-based offset, count) in the same
-- transaction, and an interrupted import resumes by skipping exactly those. An import that
-- was interrupted before this migration had committed the first `position` entries.
CREATE TABLE import_batches (
  import_id BIGINT NOT NULL,
  first_entry BIGINT NOT NULL,
  entries BIGINT NOT NULL,
  PRIMARY KEY (import_id, first_entry)
);
INSERT INTO import_batches (import_id, first_entry, entries) SELECT id, 0, position FROM imports WHERE position > 0;
)sql"},
    {9, "hosts", R"sql(
-- W4: hosts whose certificates certfleet-agent renews. Settings left null follow the
-- renewal.* defaults of the configuration. renew_at is when the host is due: its
-- certificate's expiry minus its threshold, or the time it was added while it has none, so
-- that a renewal run finds every due host through one index. host_tokens holds the agents'
-- single-use enrollment tokens by the SHA-256 of their secret.
CREATE TABLE hosts (
  host_id TEXT PRIMARY KEY,
  cert_path TEXT,
  key_path TEXT,
  cacert_path TEXT,
  sans TEXT NOT NULL,
  key_type TEXT,
  profile TEXT,
  threshold_days BIGINT,
  reload_command TEXT,
  status TEXT NOT NULL CHECK (status IN ('enrolling', 'active', 'failed', 'revoked')),
  serial TEXT,
  not_after BIGINT,
  renew_at BIGINT NOT NULL,
  last_run BIGINT,
  last_error TEXT,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX hosts_renew_at ON hosts (renew_at);
CREATE INDEX hosts_status ON hosts (status, host_id);
CREATE TABLE host_tokens (
  token_sha256 TEXT PRIMARY KEY,
  host_id TEXT NOT NULL,
  expires_at BIGINT NOT NULL,
  used_at BIGINT,
  created_at BIGINT NOT NULL
);
)sql"},
    {10, "renewals", R"sql(
-- W4: renewal runs (what one schedule firing, request or agent started) and renewals, one
-- per host and run: durable jobs whose state the host's agent advances. At most one renewal
-- per host is open (not validated or failed). due_at is when a queued renewal may start, or
-- the deadline of an active one.
CREATE TABLE renewal_runs (
  id {{id}},
  trigger TEXT NOT NULL,
  actor TEXT NOT NULL,
  total BIGINT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE TABLE renewals (
  id {{id}},
  run_id BIGINT NOT NULL,
  host_id TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('queued', 'awaiting_csr', 'issued', 'deployed', 'validated', 'failed')),
  attempt INTEGER NOT NULL,
  max_attempts INTEGER NOT NULL,
  due_at BIGINT NOT NULL,
  serial TEXT,
  old_serial TEXT,
  not_after BIGINT,
  failed_step TEXT,
  error TEXT,
  history TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  finished_at BIGINT
);
CREATE UNIQUE INDEX renewals_open_host ON renewals (host_id) WHERE state NOT IN ('validated', 'failed');
CREATE INDEX renewals_state_due ON renewals (state, due_at);
CREATE INDEX renewals_run ON renewals (run_id, state);
)sql"},
    {11, "webhook cursors", R"sql(
-- How far each webhook URL has been sent the event bus: the id of the last event it took.
CREATE TABLE webhook_cursors (
  url TEXT PRIMARY KEY,
  last_event_id BIGINT NOT NULL,
  last_error TEXT,
  updated_at BIGINT NOT NULL
);
)sql"},
    {12, "certificate subject kinds", R"sql(
-- What a certificate's name is: a DNS name (W1), a device id (W2) or a host id (W4), so
-- that an agent is recognised by what it was issued as, not by the audit's created_by.
ALTER TABLE certificates ADD COLUMN subject_kind TEXT NOT NULL DEFAULT 'dns';
UPDATE certificates SET subject_kind = 'host' WHERE type = 'server' AND created_by = 'host:' || fqdn;
UPDATE certificates SET subject_kind = 'device' WHERE type = 'device' AND created_by = 'system:provision';
)sql"},
    {13, "enrollment credentials", R"sql(
-- W4: fleet enrollment credentials: one secret (kept as its SHA-256) that enrolls up to
-- max_uses hosts whose ids match one of its patterns (a JSON array), until expires_at.
CREATE TABLE enrollment_credentials (
  id {{id}},
  token_sha256 TEXT NOT NULL UNIQUE,
  patterns TEXT NOT NULL,
  max_uses BIGINT NOT NULL,
  used BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  revoked_at BIGINT,
  last_used_at BIGINT,
  created_by TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
)sql"},
    {14, "settings", R"sql(
-- Settings changed while serving (PUT /v1/renewal/settings), shared by every node; each
-- overrides the configuration key of the same name.
CREATE TABLE settings (
  name TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  updated_by TEXT NOT NULL,
  updated_at BIGINT NOT NULL
);
)sql"},
    {15, "renewal run ends", R"sql(
-- W4: when a run ended (all its renewals validated or failed) and its digest was queued;
-- the runs before this migration count as ended, so that none is reported late.
ALTER TABLE renewal_runs ADD COLUMN finished_at BIGINT;
UPDATE renewal_runs SET finished_at = created_at;
CREATE INDEX renewal_runs_open ON renewal_runs (id) WHERE finished_at IS NULL;
)sql"},
    {16, "import verifiers", R"sql(
-- W3: Microchip manifest signers added while serving (the API, or dropped into the inbound
-- store next to manifests), beside bulk.verifier_dir's. A removed one keeps its row
-- (removed_at), so that a signer still lying in the inbound store is not added back.
CREATE TABLE import_verifiers (
  id {{id}},
  fingerprint TEXT NOT NULL,
  subject TEXT NOT NULL,
  not_after BIGINT NOT NULL,
  certificate_pem TEXT NOT NULL,
  source TEXT,
  created_by TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  removed_at BIGINT
);
CREATE UNIQUE INDEX import_verifiers_active ON import_verifiers (fingerprint) WHERE removed_at IS NULL;
CREATE UNIQUE INDEX import_verifiers_source ON import_verifiers (source);
)sql"},
    {17, "pending CAs", R"sql(
-- CAs whose key certfleet made and whose certificate a parent outside signs (an offline
-- root): the CSR waits here until the signed certificate activates the CA. External CAs
-- (certfleet holds no key) are rows of cas with an empty key_ref.
CREATE TABLE pending_cas (
  fqdn TEXT PRIMARY KEY,
  key_ref TEXT NOT NULL,
  csr_pem TEXT NOT NULL,
  parent_hint TEXT,
  created_by TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
)sql"},
    {18, "acme accounts and nonces", R"sql(
-- ACME (RFC 8555): nonces any node may take once, and accounts by their key's thumbprint.
CREATE TABLE acme_nonces (
  nonce TEXT PRIMARY KEY,
  expires_at BIGINT NOT NULL
);
CREATE INDEX acme_nonces_expiry ON acme_nonces (expires_at);
CREATE TABLE acme_accounts (
  id {{id}},
  profile TEXT NOT NULL,
  thumbprint TEXT NOT NULL,
  jwk TEXT NOT NULL,
  status TEXT NOT NULL,
  contact TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX acme_accounts_key ON acme_accounts (profile, thumbprint);
)sql"},
    {19, "acme orders, authorizations and challenges", R"sql(
-- ACME orders (RFC 8555 7.1.3): their identifiers as JSON, their certificate once issued.
-- Each order has its own authorizations, each with its challenges; validation jobs move
-- them from pending to valid or invalid.
CREATE TABLE acme_orders (
  id {{id}},
  account_id BIGINT NOT NULL REFERENCES acme_accounts (id),
  profile TEXT NOT NULL,
  status TEXT NOT NULL,
  identifiers TEXT NOT NULL,
  expires_at BIGINT NOT NULL,
  error TEXT,
  serial TEXT,
  replaces TEXT,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX acme_orders_account ON acme_orders (account_id, id);
CREATE INDEX acme_orders_serial ON acme_orders (serial);
CREATE INDEX acme_orders_status ON acme_orders (status);
CREATE TABLE acme_authzs (
  id {{id}},
  order_id BIGINT NOT NULL REFERENCES acme_orders (id),
  account_id BIGINT NOT NULL,
  identifier_type TEXT NOT NULL,
  identifier_value TEXT NOT NULL,
  wildcard INTEGER NOT NULL,
  status TEXT NOT NULL,
  expires_at BIGINT NOT NULL
);
CREATE INDEX acme_authzs_order ON acme_authzs (order_id);
CREATE TABLE acme_challenges (
  id {{id}},
  authz_id BIGINT NOT NULL REFERENCES acme_authzs (id),
  type TEXT NOT NULL,
  token TEXT NOT NULL,
  status TEXT NOT NULL,
  validated_at BIGINT,
  error TEXT
);
CREATE INDEX acme_challenges_authz ON acme_challenges (authz_id);
-- From here on nonces carry their own MAC and expiry, and acme_nonces holds the used ones
-- until they expire; the issued ones of before go.
DELETE FROM acme_nonces;
)sql"},
    {20, "acme profiles and external account bindings", R"sql(
-- ACME profiles beside the one acme.ca makes: which CA issues, what may be ordered (JSON
-- lists; empty: anything), the validity, the key types, whether accounts need EAB.
CREATE TABLE acme_profiles (
  name TEXT PRIMARY KEY,
  ca TEXT NOT NULL,
  dns_suffixes TEXT NOT NULL,
  ip_ranges TEXT NOT NULL,
  validity_days BIGINT NOT NULL,
  key_types TEXT NOT NULL,
  eab_required INTEGER NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
-- External account bindings (RFC 8555 7.3.4): the MAC key sealed with the master key; used
-- once, by the account it bound.
CREATE INDEX acme_orders_replaces ON acme_orders (replaces);
CREATE TABLE acme_eab (
  kid TEXT PRIMARY KEY,
  profile TEXT NOT NULL,
  key_sealed TEXT NOT NULL,
  created_by TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  account_id BIGINT,
  used_at BIGINT
);
)sql"},
    {21, "enrollment profiles and secrets", R"sql(
-- EST and CMP enrollment profiles, by the label in their URLs: the provisioning template that
-- issues (and so the CA, the thing's type, groups and policies), the ways clients may
-- authenticate (a JSON array), the manufacturer CAs whose certificates identify devices (PEM),
-- the key type of server-generated keys, and whether an operator approves each request.
CREATE TABLE enroll_profiles (
  label TEXT PRIMARY KEY,
  template TEXT NOT NULL,
  auth TEXT NOT NULL,
  factory_anchors TEXT NOT NULL,
  key_type TEXT NOT NULL,
  approval INTEGER NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
-- One-time enrollment secrets (EST HTTP Basic password, CMP MAC key), sealed with the master
-- key because CMP's MAC needs the secret itself; bound to a device or to a batch; used once.
CREATE TABLE enroll_secrets (
  id TEXT PRIMARY KEY,
  profile TEXT NOT NULL,
  device_id TEXT,
  batch TEXT,
  secret_sealed TEXT NOT NULL,
  expires_at BIGINT NOT NULL,
  used_at BIGINT,
  used_by TEXT,
  revoked_at BIGINT,
  created_by TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE INDEX enroll_secrets_profile ON enroll_secrets (profile, id);
-- Enrollment requests waiting for an operator's approval, by their CSR's SHA-256: a client
-- sends the same CSR again until it is decided.
CREATE TABLE enroll_requests (
  id {{id}},
  profile TEXT NOT NULL,
  csr_sha256 TEXT NOT NULL,
  device_id TEXT NOT NULL,
  csr_pem TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'rejected', 'issued')),
  serial TEXT,
  created_at BIGINT NOT NULL,
  decided_at BIGINT,
  decided_by TEXT,
  UNIQUE (profile, csr_sha256)
);
CREATE INDEX enroll_requests_device ON enroll_requests (profile, device_id, state);
)sql"},
    {22, "cmp transactions", R"sql(
-- CMP transaction IDs seen (hex), so that a replayed one is refused on any node; kept a week.
CREATE TABLE cmp_transactions (
  transaction_id TEXT PRIMARY KEY,
  created_at BIGINT NOT NULL
);
CREATE INDEX cmp_transactions_created ON cmp_transactions (created_at);
)sql"},
    {23, "ca keys in the database", R"sql(
-- CA private keys kept in the database (ca.key_backend db): PKCS#8 PEM sealed with AES-256-GCM
-- under a key derived from the master key and the row's reference, so that nodes sharing
-- the database need no shared folder, and the database alone reveals no key.
CREATE TABLE ca_keys (
  ref TEXT PRIMARY KEY,
  key_sealed TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
)sql"},
    {24, "audit chains", "", R"sql(
-- The audit log's chains 2 to 8 (audit_repo.h): groups committing at once append to different
-- chains instead of each waiting for the commit of the one before. Chain c numbers its rows
-- from (c - 1) * 2^48 + 1. Chain 1 is the log so far; a node of an older release keeps
-- appending to it.
ALTER TABLE audit_head DROP CONSTRAINT IF EXISTS audit_head_id_check;
INSERT INTO audit_head (id, seq, hash)
  SELECT g, (g - 1) * 281474976710656, '0000000000000000000000000000000000000000000000000000000000000000'
  FROM generate_series(2, 8) AS g;
)sql"},
    {25, "enrollment requests remember their authentication; one waiting a device", R"sql(
-- What an approved request's issuance checks again, as the request's first answer did: a
-- device that was new then must still have no thing; the certificate it re-enrolled with must
-- still be the thing's current one.
ALTER TABLE enroll_requests ADD COLUMN new_device INTEGER NOT NULL DEFAULT 0;
ALTER TABLE enroll_requests ADD COLUMN presented_serial TEXT;
-- A device's waiting request, whatever the profile.
CREATE INDEX enroll_requests_waiting ON enroll_requests (device_id, state);
)sql"},
    {26, "ACME orders keep the notAfter their client asked for", R"sql(
ALTER TABLE acme_orders ADD COLUMN not_after BIGINT;
)sql"},
    {27, "certificates name their issuer without a foreign key on PostgreSQL", "", R"sql(
-- The key's check locked the issuing CA's row (FOR KEY SHARE) once per certificate: a write
-- to that row's page per group, and a multixact whenever two groups (two nodes) issue under
-- one CA at once. The issuer's status is checked in the same transaction under the issuer's
-- advisory lock (store::CheckIssuerActive), and certificates are never deleted, so the
-- reference stays true without it. SQLite's check is an in-process lookup and stays.
ALTER TABLE certificates DROP CONSTRAINT IF EXISTS certificates_issuer_serial_fkey;
)sql"},
    {28, "CMP certificates waiting for their certConf", R"sql(
-- A certificate answered without implicit confirmation, until its client's certConf: revoked
-- by whichever node sweeps once confirm_by has passed (RFC 9483 4.1.1), whatever became of
-- the node that answered it.
ALTER TABLE cmp_transactions ADD COLUMN awaiting_serial TEXT;
ALTER TABLE cmp_transactions ADD COLUMN confirm_by BIGINT;
CREATE INDEX cmp_transactions_awaiting ON cmp_transactions (confirm_by) WHERE awaiting_serial IS NOT NULL;
CREATE INDEX cmp_transactions_awaiting_serial ON cmp_transactions (awaiting_serial) WHERE awaiting_serial IS NOT NULL;
)sql"},
    {29, "a batch belongs to one provisioning template", R"sql(
-- Two templates claiming one batch at once on two nodes (or connections) of PostgreSQL each
-- found it free. Where that happened, the batch stays with the template provisioning used (the
-- first by name); the other's body still names it, and its next update is refused until the
-- batch is taken out of it.
DELETE FROM registry_links WHERE kind = 'batch-template' AND EXISTS (
  SELECT 1 FROM registry_links o
  WHERE o.kind = 'batch-template' AND o.from_name = registry_links.from_name AND o.to_name < registry_links.to_name);
CREATE UNIQUE INDEX registry_links_one_template ON registry_links (from_name) WHERE kind = 'batch-template';
)sql"},
};

std::string Expand(std::string_view sql, Dialect dialect) {
  std::string out(sql);
  const std::string marker = "{{id}}";
  const std::string id = dialect == Dialect::kPostgres ? "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
                                                       : "INTEGER PRIMARY KEY AUTOINCREMENT";
  for (size_t pos; (pos = out.find(marker)) != std::string::npos;) out.replace(pos, marker.size(), id);
  return out;
}

constexpr std::string_view kCreateMigrationsTable =
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT "
    "NOT NULL)";

}  // namespace

Result<int> SchemaVersion(Store& store) {
  CF_RETURN_IF_ERROR(store.Exec(kCreateMigrationsTable));
  CF_ASSIGN_OR_RETURN(Rows rows, store.Query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"));
  return static_cast<int>(rows.at(0).Int(0));
}

Result<int> Migrate(Store& store) {
  if (store.dialect() == Dialect::kPostgres) {
    // CREATE TABLE IF NOT EXISTS can still race on PostgreSQL's catalog: take the lock first.
    CF_RETURN_IF_ERROR(store.Transact([](Tx& tx) -> Result<void> {
      CF_RETURN_IF_ERROR(LockForTransaction(tx, kMigrationLockKey));
      return tx.ExecScript(kCreateMigrationsTable);
    }));
  } else {
    CF_RETURN_IF_ERROR(store.Exec(kCreateMigrationsTable));
  }
  int applied = 0;
  for (const Migration& m : kMigrations) {
    bool ran = false;
    Result<void> r = store.Transact([&](Tx& tx) -> Result<void> {
      ran = false;
      CF_RETURN_IF_ERROR(LockForTransaction(tx, kMigrationLockKey));
      CF_ASSIGN_OR_RETURN(auto done,
                          tx.QueryOne("SELECT 1 FROM schema_migrations WHERE version = ?", {int64_t{m.version}}));
      if (done) return Ok();
      if (!m.sql.empty()) CF_RETURN_IF_ERROR(tx.ExecScript(Expand(m.sql, tx.dialect())));
      if (tx.postgres() && !m.postgres_sql.empty()) CF_RETURN_IF_ERROR(tx.ExecScript(m.postgres_sql));
      CF_RETURN_IF_ERROR(tx.Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                                 {int64_t{m.version}, std::string(m.name), SystemClock::Instance().NowMillis()}));
      ran = true;
      return Ok();
    });
    if (!r.ok()) return r.error().Wrap(fmt::format("migration {} ({})", m.version, m.name));
    if (ran) {
      ++applied;
      log::Info("applied migration", {{"version", m.version}, {"name", m.name}});
    }
  }
  return applied;
}

}  // namespace certfleet::store
