#include "mail/eml/eml_mailer.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>

#include "core/crypto.h"

namespace certfleet::mail::eml {
namespace {

namespace fs = std::filesystem;

class EmlMailer final : public Mailer {
 public:
  EmlMailer(std::string dir, const Clock& clock) : dir_(std::move(dir)), clock_(clock) {}

  Result<Sent> Send(const Message& message) override {
    const int64_t now = clock_.NowMillis();
    Sent sent{NewMessageId("certfleet.local"), 0};
    CF_ASSIGN_OR_RETURN(std::string text, Render(message, sent.message_id, now));
    sent.bytes = text.size();
    std::error_code ec;
    fs::create_directories(dir_, ec);
    const std::string name = fmt::format("{}-{}.eml", now, HexEncode(RandomBytes(6)));
    const fs::path tmp = fs::path(dir_) / ("." + name + ".tmp");
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      if (!out.write(text.data(), static_cast<std::streamsize>(text.size())) || !out.flush()) {
        return MakeError(ErrorCode::kUnavailable, fmt::format("writing {} to {} failed", name, dir_));
      }
    }
    fs::rename(tmp, fs::path(dir_) / name, ec);
    if (ec) return MakeError(ErrorCode::kUnavailable, fmt::format("writing {}: {}", name, ec.message()));
    return sent;
  }

 private:
  const std::string dir_;
  const Clock& clock_;
};

}  // namespace

std::unique_ptr<Mailer> OpenEmlMailer(std::string dir, const Clock& clock) {
  return std::make_unique<EmlMailer>(std::move(dir), clock);
}

}  // namespace certfleet::mail::eml
