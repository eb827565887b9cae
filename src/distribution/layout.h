#pragma once

#include <string>
#include <string_view>
#include <variant>

namespace certfleet::distribution {

// Where an inbound object belongs: a warehouse's shared files (gateway_eui SHARED_FILES) or
// one gateway's certificate and key.
struct InboundFile {
  std::string warehouse;
  std::string gateway_eui;
  std::string name;  // the file name, as it goes into the ZIP
};

// Classifies `key` by the seed's layout under `prefix`:
//   <prefix><Warehouse>/servertrust_<region>_<account>.pem   shared
//   <prefix><Warehouse>/endpoints_<region>_<account>.json    shared
//   <prefix><Warehouse>/<GatewayEUI>/<last 5 of EUI>.pem|.key
// Anything else gives the reason it is ignored.
std::variant<InboundFile, std::string> Classify(std::string_view key, std::string_view prefix);

// Warehouse names are folder names: 1 to 64 letters, digits, '_', '-' or '.', not starting
// with '.'. They go into subjects and ZIP names.
bool IsWarehouseName(std::string_view name);

}  // namespace certfleet::distribution
