// NetworkPrefixTests.swift - trusted-network blocks: parsing and membership

import EventCore
import Injection
import Testing

@Suite struct NetworkPrefixTests {
    @Test func parsesBlocksAndRejectsJunk() {
        #expect(NetworkPrefix("10.0.0.0/8")?.length == 8)
        #expect(NetworkPrefix("::1")?.length == 128)
        #expect(NetworkPrefix("192.0.2.1")?.length == 32)
        for bad in ["10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/+8", "example.com/8", "1.2.3.4/8/9", ""] {
            #expect(NetworkPrefix(bad) == nil, "\(bad)")
        }
    }

    @Test func containsByPrefixLength() {
        let block = NetworkPrefix("192.168.16.0/20")!
        #expect(block.contains(IPAddress("192.168.31.255")!))
        #expect(!block.contains(IPAddress("192.168.32.0")!))
        #expect(!block.contains(IPAddress("::1")!))
        #expect(NetworkPrefix("0.0.0.0/0")!.contains(IPAddress("203.0.113.9")!))
        let six = NetworkPrefix("2001:db8::/65")!
        #expect(six.contains(IPAddress("2001:db8::7fff:0:0:1")!))
        #expect(!six.contains(IPAddress("2001:db8::8000:0:0:1")!))
    }

    @Test func loopbackIncludesMappedIPv4() {
        #expect(NetworkPrefix.isLoopback(IPAddress("127.9.9.9")!))
        #expect(NetworkPrefix.isLoopback(IPAddress("::1")!))
        #expect(NetworkPrefix.isLoopback(IPAddress("::ffff:127.0.0.1")!))
        #expect(!NetworkPrefix.isLoopback(IPAddress("::ffff:10.0.0.1")!))
        #expect(!NetworkPrefix.isLoopback(IPAddress("10.0.0.1")!))
    }
}
