-- wrk script shared by the bench scripts: requests the paths of the file URL_LIST in
-- turn, with the Accept header of ACCEPT (default */*) and gzip accepted; with AUTH set,
-- as `Authorization: Bearer $AUTH` (the cost of authorization).
local paths = {}
for line in io.lines(os.getenv("URL_LIST")) do paths[#paths + 1] = line end
local accept = os.getenv("ACCEPT") or "*/*"
local auth = os.getenv("AUTH")
local headers = {["Accept"] = accept, ["Accept-Encoding"] = "gzip"}
if auth and auth ~= "" then headers["Authorization"] = "Bearer " .. auth end
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i], headers)
end
