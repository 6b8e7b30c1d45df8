"""Foundations every other package builds on: input spaces and checks, argument checks, batching
on the batch axis, reference inputs (blur / zero / mean), eps-ball projection, hooks that always
come off, and run settings (profiles, seeding, devices, provenance, atomic writes)."""
