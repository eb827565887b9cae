#pragma once

#include <span>

#include "broker/broker_service.h"
#include "core/config.h"

namespace certfleet::broker {

// The configuration keys of broker enforcement (broker.*): written once, here.
std::span<const ConfigKey> ConfigKeys();

BrokerService::Options BrokerOptions(const Config& config);

}  // namespace certfleet::broker
