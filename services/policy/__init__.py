"""The fatigue policy, shared by the API and the scorer.

- `schema`    the YAML document's shape and defaults (the packaged `policy.yaml`)
- `model`     the runtime policy: validated values, segments, `load_policy` / `parse_policy`
- `store`     the policy stored through `PUT /v1/policy` (Redis, versioned)
- `resolver`  which policy is in force: the stored one, else a fallback; hot reload without restart
- `decision`  the pre-send decision, a pure function of a snapshot and the policy
"""
