#pragma once

#include <memory>
#include <string>
#include <vector>

#include "bulk/manifest_reader.h"

namespace certfleet::bulk::readers {

// Microchip's manifest (Trust&GO, TrustFLEX): a JSON array of JWS objects in flattened JSON
// serialization. Each entry's signature is checked against the manifest signers'
// certificates (`verifiers_pem`, at least one): the signer whose SubjectKeyIdentifier,
// base64url, is the entry's `kid`, whose SHA-256 is its `x5t#S256`, newest first. Thing
// name = header.uniqueId; the certificate is publicKeySet.keys[0].x5c[0], the rest of x5c its
// chain. An entry that does not verify or has no certificate is reported, not imported.
Result<std::unique_ptr<ManifestReader>> OpenMicrochipManifest(const std::string& path,
                                                              const std::vector<std::string>& verifiers_pem);

}  // namespace certfleet::bulk::readers
