-- Argo CD health of a kmailops.io EmailSenderConfig (Lua 5.1, as Argo CD runs it).
-- Ready=True is Healthy: the spec is valid and the credentials are loaded. A config with
-- `disabled: true` is Ready too (kept on purpose, it sends nothing). The provider's own
-- health never makes it Degraded, so an outage does not hold a sync or a later wave; the
-- message says when the provider is unhealthy or the sender disabled. Ready=False is Degraded.
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

local ready = condition(status, "Ready")
local healthy = condition(status, "Healthy")
-- Earlier kmailops versions wrote Ready=False, reason Disabled, for a disabled sender.
local disabled = ready ~= nil and ready.reason == "Disabled"
if ready ~= nil and ready.status == "False" and not disabled then
  hs.status = "Degraded"
  hs.message = describe(ready, "Not ready")
elseif ready ~= nil and (ready.status == "True" or disabled) then
  hs.status = "Healthy"
  if disabled then
    hs.message = "Disabled: nothing is sent through it; Emails use its fallbacks"
  elseif healthy ~= nil and healthy.status == "True" then
    hs.message = describe(healthy, "Ready and healthy")
  elseif healthy ~= nil and healthy.status == "False" then
    hs.message = "Ready, but the provider is unhealthy: " .. describe(healthy, "health check failed")
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
