-- Health of a Berth ServiceSpec (berth.dev/v1alpha1): per-component settings
-- of one BookingPlatform.
--
-- The status is kstatus-compatible: status.observedGeneration, conditions
-- Ready and Degraded, and kstatus' Reconciling and Stalled. While its
-- platform is paused, Ready is False with reason PlatformPaused. How the operator
-- computes them: operator/src/servicespec.rs in the Berth repository.
--
-- Written for Argo CD's restricted Lua set (base, table, package and a safe
-- os): no string library, so no string methods.
local hs = {}

local function condition(conditions, type)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end
if obj.metadata.generation ~= nil and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end

local ready = condition(status.conditions, "Ready")
local degraded = condition(status.conditions, "Degraded")

if ready ~= nil and ready.reason == "PlatformPaused" then
  hs.status = "Suspended"
  hs.message = ready.message
  return hs
end

-- Its platform does not exist, or another ServiceSpec configures the component.
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = degraded.message
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end

hs.status = "Progressing"
if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  hs.message = ready.message
else
  hs.message = "Waiting for the component to become ready"
end
return hs
