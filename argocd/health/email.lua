-- Argo CD health of a kmailops.io Email (Lua 5.1, as Argo CD runs it).
-- Sent, Expired, Previewed and Scheduled rest Healthy (only Healthy lets a sync wave go on,
-- and a schedule is the state Git asks for: it must not hold a sync until sendAt);
-- Pending, Sending and Retrying are Progressing; Failed and Unknown are Degraded.
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
  hs.message = "Waiting for kmailops to observe the Email"
  return hs
end

local ready = condition(status, "Ready")
local function explain(fallback)
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    return ready.message
  end
  return fallback
end

local phase = status.phase
if phase == "Sent" or phase == "Expired" or phase == "Previewed" then
  hs.status = "Healthy"
  hs.message = explain(phase)
elseif phase == "Scheduled" then
  hs.status = "Healthy"
  if status.nextAttemptTime ~= nil then
    hs.message = "Scheduled for " .. status.nextAttemptTime
  else
    hs.message = explain("Scheduled")
  end
elseif phase == nil or phase == "Pending" or phase == "Sending" or phase == "Retrying" then
  hs.status = "Progressing"
  if phase == "Retrying" and status.error ~= nil then
    hs.message = "Retrying: " .. status.error
  else
    hs.message = explain(phase or "Pending")
  end
elseif phase == "Failed" or phase == "Unknown" then
  hs.status = "Degraded"
  if status.error ~= nil and status.error ~= "" then
    hs.message = status.error
  else
    hs.message = explain(phase)
  end
else
  hs.status = "Unknown"
  hs.message = "Unrecognised phase " .. tostring(phase)
end
return hs
