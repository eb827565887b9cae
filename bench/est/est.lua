-- wrk script: each request enrolls the next registered device by EST simpleenroll (RFC 7030),
-- the body its CSR as base64 DER, round robin over BENCH_CSRS (one base64 CSR a line). It walks
-- the list exactly as provision.lua does, so both modes of bench/est/run touch the devices in
-- the same order.
local csrs = {}
for line in io.lines(os.getenv("BENCH_CSRS")) do
  csrs[#csrs + 1] = line
end
local next_csr = 0
local headers = {["Content-Type"] = "application/pkcs10"}

-- As provision.lua: each wrk thread starts at its own place, spread evenly over the list
-- (BENCH_THREADS: wrk's -t), so that no two enroll the same device at once.
local threads = 0
function setup(thread)
  thread:set("index", threads)
  threads = threads + 1
end

function init(args)
  local threads = tonumber(os.getenv("BENCH_THREADS")) or error("BENCH_THREADS: wrk's -t, for the threads' places")
  next_csr = math.floor(index * #csrs / threads)
end

function request()
  next_csr = next_csr % #csrs + 1
  return wrk.format("POST", "/.well-known/est/simpleenroll", headers, csrs[next_csr])
end
