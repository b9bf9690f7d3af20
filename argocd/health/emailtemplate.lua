-- Argo CD health of a kmailops.io EmailTemplate (Lua 5.1, as Argo CD runs it).
-- Ready=True (parses and renders with previewVariables) is Healthy; Ready=False is Degraded.
local hs = {}

local function condition(status, type)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local status = obj.status
local generation = obj.metadata.generation
if status == nil or status.observedGeneration == nil or status.observedGeneration < 0
    or (generation ~= nil and status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for kmailops to observe the EmailTemplate"
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = "Renders with previewVariables"
elseif ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  local detail = status.error
  if detail ~= nil and detail.message ~= nil then
    local where = ""
    if detail.template ~= nil then
      where = detail.template
      if detail.line ~= nil then
        where = where .. ":" .. tostring(detail.line)
        if detail.column ~= nil then
          where = where .. ":" .. tostring(detail.column)
        end
      end
      where = where .. ": "
    end
    hs.message = where .. detail.message
  elseif ready.message ~= nil and ready.message ~= "" then
    hs.message = ready.message
  else
    hs.message = "Template does not render"
  end
else
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
end
return hs
