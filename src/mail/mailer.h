#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "core/clock.h"
#include "core/result.h"
#include "mail/message.h"

namespace certfleet::mail {

// What a sent message was.
struct Sent {
  std::string message_id;
  size_t bytes = 0;  // the rendered message
};

// Sends mail: over SMTP, or into a folder of .eml files. Thread-safe.
class Mailer {
 public:
  virtual ~Mailer() = default;
  // kInvalidArgument for a message that cannot be rendered, kUnavailable when the server
  // cannot be reached or refuses the message for now (worth retrying).
  virtual Result<Sent> Send(const Message& message) = 0;
};

// `file:///path` writes each message to path/<time>-<id>.eml; `smtp://[user:pass@]host:port`
// sends with STARTTLS when the server offers it (`?tls=required` insists on it) and
// `smtps://` with TLS from the start. `?ca=/path.pem` sets the CAs to trust.
Result<std::unique_ptr<Mailer>> OpenMailer(std::string_view url, const Clock& clock);

}  // namespace certfleet::mail
