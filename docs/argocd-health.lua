-- Argo CD health check for triggers.changejob.dev/ChangeTriggeredJob.
-- Install it in argocd-cm under the key
--   resource.customizations.health.triggers.changejob.dev_ChangeTriggeredJob
-- (see docs/gitops.md). Written for Argo CD's Lua 5.1 interpreter.
--
-- Healthy:     the operator has observed the current generation and Ready is True.
-- Degraded:    Degraded is True (a watched resource is missing or forbidden, or the spec is
--              invalid), or Ready is False.
-- Progressing: anything else (no status yet, an older generation observed, Ready Unknown).

local hs = { status = "Progressing", message = "Waiting for the operator to report status" }

local function describe(condition, fallback)
  local reason = condition.reason or ""
  local message = condition.message or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if message ~= "" then
    return message
  end
  if reason ~= "" then
    return reason
  end
  return fallback
end

if obj.status == nil then
  return hs
end

local generation = obj.metadata and obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = nil
local degraded = nil
for _, condition in ipairs(obj.status.conditions or {}) do
  if condition.type == "Ready" then
    ready = condition
  elseif condition.type == "Degraded" then
    degraded = condition
  end
end

if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(degraded, "Degraded")
  return hs
end

if ready ~= nil then
  if ready.status == "True" then
    hs.status = "Healthy"
    hs.message = describe(ready, "Ready")
  elseif ready.status == "False" then
    hs.status = "Degraded"
    hs.message = describe(ready, "Not ready")
  else
    hs.message = describe(ready, "Readiness unknown")
  end
end

return hs
