// Delivery.swift - the delivery engine module: worker shards, routing, connection pools
// and the delivery log. The pieces are in the files beside this one; ARCHITECTURE.md has
// the data flow.
