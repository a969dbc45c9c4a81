-- Health of a Berth BookingPlatform (berth.dev/v1alpha1).
--
-- The status is kstatus-compatible: status.observedGeneration, conditions
-- Ready, Progressing and Degraded, and kstatus' Reconciling and Stalled.
-- How the operator computes them: operator/src/status.rs in the Berth repository.
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
local progressing = condition(status.conditions, "Progressing")
local degraded = condition(status.conditions, "Degraded")

-- Paused: nothing is created, changed or deleted until spec.paused is unset.
if obj.spec ~= nil and obj.spec.paused == true then
  hs.status = "Suspended"
  if progressing ~= nil and progressing.reason == "Paused" then
    hs.message = progressing.message
  else
    hs.message = "Reconciliation is paused (spec.paused)"
  end
  return hs
end

-- A missing Secret or key, a failed migration job, a ServiceSpec conflict.
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

-- Migration running, rollout under way, pods not ready yet.
hs.status = "Progressing"
if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  hs.message = ready.message
elseif progressing ~= nil and progressing.message ~= nil then
  hs.message = progressing.message
else
  hs.message = "Waiting for the platform to become ready"
end
return hs
