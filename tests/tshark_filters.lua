-- One tshark pass, many display filters: a tap per filter (tshark's own filter engine, as -Y
-- uses it), each printing "INDEX<TAB>FRAME" for every frame it matches. Filters come one per
-- line from the file named by the script's argument (-X lua_script1:PATH).
local path = ...
local n = 0
for line in io.lines(path) do
    n = n + 1
    local i = n
    local tap = Listener.new("frame", line)
    function tap.packet(pinfo)
        io.write(i, "\t", pinfo.number, "\n")
    end
end
