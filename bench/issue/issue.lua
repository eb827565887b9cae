-- wrk script: POST the same device CSR over and over (keep-alive), to certfleet or cfssl.
-- BENCH_BODY: file with the JSON body; BENCH_PATH: request path; BENCH_TOKEN: bearer token or empty.
local function read(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH")
wrk.body = read(os.getenv("BENCH_BODY"))
wrk.headers["Content-Type"] = "application/json"
local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
