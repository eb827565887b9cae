#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/result.h"

namespace certfleet::mail {

struct Attachment {
  std::string filename;  // printable ASCII, no quotes
  std::string content_type;
  std::string data;
};

// A plain-text mail with attachments.
struct Message {
  std::string from;
  std::vector<std::string> to;
  std::string subject;  // printable ASCII
  std::string text;     // UTF-8
  std::vector<Attachment> attachments;
};

// The message as RFC 5322 text with MIME (multipart/mixed, base64 parts, CRLF line ends),
// with Date and the given Message-ID. kInvalidArgument for header values that could inject
// headers (CR, LF, non-ASCII) or addresses that are not plain addr-specs.
Result<std::string> Render(const Message& message, const std::string& message_id, int64_t now_millis);

// Bytes that `n` bytes take once base64-encoded in 76-character lines ending in CRLF.
size_t Base64LinesSize(size_t n);
// An upper bound of everything but the attachments' encoded bytes: headers, the text part,
// boundaries and part headers, for a message like `message` with its attachments empty.
size_t RenderedSizeWithoutAttachments(const Message& message);

// "addr@domain" with printable characters only; the check mail servers would make anyway.
bool IsMailAddress(std::string_view address);

// A new Message-ID, "<random@domain>".
std::string NewMessageId(std::string_view domain);

}  // namespace certfleet::mail
