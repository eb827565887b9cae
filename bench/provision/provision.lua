-- wrk script: each request provisions the next registered device (its CSR in the device-csr
-- header, newlines escaped as the seed sends it), round robin over BENCH_CSRS (one per line).
local csrs = {}
for line in io.lines(os.getenv("BENCH_CSRS")) do
  csrs[#csrs + 1] = line
end
local next_csr = 0

-- Each wrk thread starts at its own place, spread evenly over the list (BENCH_THREADS: wrk's
-- -t), so that no two provision the same device at once, as no factory does: each would wait
-- for the other's lock on the device's row. (Random places drew the same one often: wrk's
-- threads start in the same second, with same-looking seeds.)
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
  return wrk.format("POST", "/v1/provision", {["device-csr"] = csrs[next_csr]}, "")
end
