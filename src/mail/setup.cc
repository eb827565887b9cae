#include "mail/setup.h"

namespace certfleet::mail {
namespace {

constexpr ConfigKey kKeys[] = {
    {"mail", ConfigType::kUrl, "file://{data_dir}/outbox",
     "Mail: file://PATH writes .eml files; smtp://user:pass@host:port[?tls=required&ca=FILE] or smtps://... sends."},
};

}  // namespace

std::span<const ConfigKey> ConfigKeys() { return kKeys; }

}  // namespace certfleet::mail
