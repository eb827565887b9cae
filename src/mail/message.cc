#include "mail/message.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <ctime>

#include "core/crypto.h"

namespace certfleet::mail {
namespace {

constexpr size_t kLineChars = 76;                  // RFC 2045's limit for base64 lines
constexpr size_t kLineInput = kLineChars / 4 * 3;  // input bytes per full line
// Room for the boundaries and part headers of one attachment, with its file name.
constexpr size_t kPartOverhead = 256;
constexpr size_t kHeaderOverhead = 512;

bool IsHeaderSafe(std::string_view v) {
  for (unsigned char c : v) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

void AppendBase64Lines(std::string& out, std::string_view data) {
  for (size_t i = 0; i < data.size(); i += kLineInput) {
    out += Base64Encode(data.substr(i, kLineInput));
    out += "\r\n";
  }
}

std::string RfcDate(int64_t millis) {
  const std::time_t t = static_cast<std::time_t>(millis / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:%a, %d %b %Y %H:%M:%S} +0000", tm);
}

}  // namespace

bool IsMailAddress(std::string_view a) {
  const size_t at = a.find('@');
  if (a.size() > 254 || at == std::string_view::npos || at == 0 || at + 1 == a.size() ||
      a.find('@', at + 1) != std::string_view::npos) {
    return false;
  }
  for (unsigned char c : a) {
    if (c <= 0x20 || c >= 0x7f || c == '<' || c == '>' || c == ',' || c == '"' || c == '(' || c == ')' || c == ';' ||
        c == '\\') {
      return false;
    }
  }
  return true;
}

std::string NewMessageId(std::string_view domain) { return fmt::format("<{}@{}>", HexEncode(RandomBytes(16)), domain); }

size_t Base64LinesSize(size_t n) {
  const size_t lines = (n + kLineInput - 1) / kLineInput;
  return (n + 2) / 3 * 4 + lines * 2;
}

size_t RenderedSizeWithoutAttachments(const Message& m) {
  size_t size = kHeaderOverhead + m.from.size() + m.subject.size() + Base64LinesSize(m.text.size()) + kPartOverhead;
  for (const auto& to : m.to) size += to.size() + 2;
  for (const auto& a : m.attachments) size += kPartOverhead + a.filename.size() + a.content_type.size();
  return size;
}

Result<std::string> Render(const Message& m, const std::string& message_id, int64_t now_millis) {
  if (!IsMailAddress(m.from)) return MakeError(ErrorCode::kInvalidArgument, "the sender is not a mail address");
  if (m.to.empty()) return MakeError(ErrorCode::kInvalidArgument, "a message needs a recipient");
  for (const auto& to : m.to) {
    if (!IsMailAddress(to)) {
      return MakeError(ErrorCode::kInvalidArgument, fmt::format("{:?} is not a mail address", to.substr(0, 100)));
    }
  }
  if (!IsHeaderSafe(m.subject) || !IsHeaderSafe(message_id)) {
    return MakeError(ErrorCode::kInvalidArgument, "subject and message id must be printable ASCII");
  }
  for (const auto& a : m.attachments) {
    if (!IsHeaderSafe(a.filename) || a.filename.find('"') != std::string::npos || !IsHeaderSafe(a.content_type)) {
      return MakeError(ErrorCode::kInvalidArgument, "attachment names must be printable ASCII without quotes");
    }
  }
  const std::string boundary = "certfleet-" + HexEncode(RandomBytes(12));
  std::string to;
  for (const auto& t : m.to) to += (to.empty() ? "" : ", ") + t;
  std::string out;
  size_t attachments = 0;
  for (const auto& a : m.attachments) attachments += Base64LinesSize(a.data.size());
  out.reserve(RenderedSizeWithoutAttachments(m) + attachments);
  out += fmt::format(
      "From: {}\r\nTo: {}\r\nSubject: {}\r\nDate: {}\r\nMessage-ID: {}\r\nMIME-Version: 1.0\r\n"
      "Content-Type: multipart/mixed; boundary=\"{}\"\r\n\r\n",
      m.from, to, m.subject, RfcDate(now_millis), message_id, boundary);
  out += fmt::format("--{}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n",
                     boundary);
  AppendBase64Lines(out, m.text);
  for (const auto& a : m.attachments) {
    out += fmt::format(
        "--{}\r\nContent-Type: {}; name=\"{}\"\r\nContent-Transfer-Encoding: base64\r\n"
        "Content-Disposition: attachment; filename=\"{}\"\r\n\r\n",
        boundary, a.content_type, a.filename, a.filename);
    AppendBase64Lines(out, a.data);
  }
  out += fmt::format("--{}--\r\n", boundary);
  return out;
}

}  // namespace certfleet::mail
