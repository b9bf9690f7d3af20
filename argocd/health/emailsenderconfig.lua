-- Argo CD health of a kmailops.io EmailSenderConfig (Lua 5.1, as Argo CD runs it).
-- Ready=False or Healthy=False is Degraded; Ready=True is Healthy; a config with
-- `disabled: true` is Suspended (it is kept on purpose and sends nothing).
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

local function describe(c, fallback)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local status = obj.status
local generation = obj.metadata.generation
if status == nil or status.observedGeneration == nil or status.observedGeneration < 0
    or (generation ~= nil and status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for kmailops to observe the EmailSenderConfig"
  return hs
end

if obj.spec ~= nil and obj.spec.disabled == true then
  hs.status = "Suspended"
  hs.message = "Disabled: Emails move on to the fallback senders"
  return hs
end

local ready = condition(status, "Ready")
local healthy = condition(status, "Healthy")
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready, "Not ready")
elseif healthy ~= nil and healthy.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(healthy, "Health check failed")
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  if healthy ~= nil and healthy.status == "True" then
    hs.message = describe(healthy, "Ready and healthy")
  elseif healthy ~= nil then
    hs.message = "Ready; health not known yet: " .. describe(healthy, "no check result")
  else
    hs.message = describe(ready, "Ready")
  end
else
  hs.status = "Progressing"
  if ready ~= nil then
    hs.message = describe(ready, "Waiting for the Ready condition")
  else
    hs.message = "Waiting for the Ready condition"
  end
end
return hs
