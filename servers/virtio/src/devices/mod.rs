//! Device types (§5): IDs, feature bits, configuration layouts, and request formats.
