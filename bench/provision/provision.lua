-- wrk script: each request provisions the next registered device (its CSR in the device-csr
-- header, newlines escaped as the seed sends it), round robin over BENCH_CSRS (one per line).
local csrs = {}
for line in io.lines(os.getenv("BENCH_CSRS")) do
  csrs[#csrs + 1] = line
end
local next_csr = 0

function init(args)
  -- Each wrk thread starts at another place in the list (its own seed: unseeded, every
  -- thread would draw the same place and provision the same devices at once).
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16))
  next_csr = math.random(#csrs)
end

function request()
  next_csr = next_csr % #csrs + 1
  return wrk.format("POST", "/v1/provision", {["device-csr"] = csrs[next_csr]}, "")
end
