-- Argo CD health check for mailsec.io/Tenant: the health of the tenant's service.
--   Progressing  no status yet, or status.observedGeneration behind metadata.generation
--   Degraded     Ready=False (e.g. DeletionBlocked), Stalled=True, phase ReadOnly or Suspended
--   Healthy      phase Active; phase Warning too, with the reason in the message (the service
--                runs fully: an expiring licence must not mark the application Degraded for the
--                whole warning period nor hold back sync waves; alert on it with the metrics)
local hs = {}

local function condition(t)
  if obj.status == nil or obj.status.conditions == nil then return nil end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == t then return c end
  end
  return nil
end

local function say(c)
  if c == nil then return "" end
  local text = c.reason or ""
  if c.message ~= nil and c.message ~= "" then text = text .. ": " .. c.message end
  return text
end

if obj.status == nil or obj.status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to evaluate the tenant"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = say(stalled)
  return hs
end
local ready = condition("Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
if ready.status ~= "True" then
  hs.status = "Degraded"
  hs.message = say(ready)
  return hs
end

local phase = obj.status.phase
if phase == "Suspended" then
  hs.status = "Degraded"
  hs.message = "Suspended: " .. say(condition("Suspended"))
elseif phase == "ReadOnly" then
  hs.status = "Degraded"
  hs.message = "Read-only (settings frozen, mail still filtered): " .. say(condition("ReadOnly"))
elseif phase == "Warning" then
  hs.status = "Healthy"
  hs.message = "Warning: " .. say(condition("Warning"))
elseif phase == "Active" then
  hs.status = "Healthy"
  hs.message = "Active"
else
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to set the phase"
end
return hs
