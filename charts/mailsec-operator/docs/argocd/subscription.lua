-- Argo CD health check for mailsec.io/Subscription: whether the manifest can be acted on.
-- The service's health is the Tenant's; a subscription that has run out is the normal end of a
-- licence (a renewal is another Subscription), so its phase alone never makes it Degraded.
--   Progressing  no status yet, or status.observedGeneration behind metadata.generation
--   Degraded     Ready=False (TenantNotFound, SharedTenantNotFound, UnknownProduct, InvalidDate)
--                or Stalled=True
--   Healthy      otherwise; the message gives the phase, the effective end and any seat overrun
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
  hs.message = "Waiting for the operator to evaluate the subscription"
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

hs.status = "Healthy"
hs.message = (obj.status.phase or "Unknown")
if obj.status.effectiveEndAt ~= nil then
  hs.message = hs.message .. ", ends " .. obj.status.effectiveEndAt
end
local seats = condition("SeatLimitExceeded")
if seats ~= nil and seats.status == "True" then
  hs.message = hs.message .. "; " .. say(seats)
end
return hs
