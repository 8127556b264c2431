// Exports.swift - modules every EventCore user needs as well
//
// Streams read and write `ByteBuffer`s; re-exporting `Bytes` saves every
// client of EventCore a second import (swift-nio's NIO does the same for NIOCore).

@_exported public import Bytes
