// Mailbox.swift - hand items to a loop thread from any thread
//
// The only way work crosses into a loop: producers append under a mutex and
// wake the loop with uv_async_send; the loop swaps the whole pending array out
// under the same mutex and consumes it without holding the lock. Items from one
// producer arrive in the order that producer posted them. The wake-up is sent
// only on the empty -> non-empty transition, so a burst of posts costs one
// eventfd write, and the consumer reuses its batch array's storage.

import CLibUV
import Synchronization

/// A multi-producer, single-consumer queue whose consumer runs on one loop.
///
/// `post` may be called from any thread. The consumer closure, `close()` and
/// the initializer run on the owning loop's thread only. Every item `post`
/// accepted is delivered: `close()` delivers what is still pending before it
/// closes the handle. After `close()`, `post` returns `false` and the item is
/// not delivered (a mailbox is closed when its loop shuts down).
///
/// Sendable because the mutable state shared with producers (`pending`, the
/// closed flag and the async handle pointer) lives inside a `Mutex`; the
/// consumer-side fields are touched only on the loop thread.
public final class Mailbox<Item: Sendable>: @unchecked Sendable, HandleOwner {
    private struct Shared {
        var pending: [Item] = []                    /* posted, not yet taken */
        var async: UnsafeMutablePointer<uv_async_t>? /* nil once closed */
    }

    private let shared = Mutex(Shared())
    private let handle: UnsafeMutablePointer<uv_async_t>   /* owned; freed in handleDidClose */
    private let consumer: (Item) -> Void                    /* loop thread only */
    private var batch: [Item] = []                          /* loop thread only: reused storage */
    private var draining = false                            /* loop thread only: inside drain() */

    /// Create a mailbox on `loop`; must be called on the loop's thread.
    public init(loop: Loop, consumer: @escaping (Item) -> Void) throws(IOError) {
        self.consumer = consumer
        handle = .allocate(capacity: 1)
        let result = uv_async_init(loop.raw, handle, mailboxWakeCallback)
        if result < 0 {
            handle.deallocate()
            throw IOError(result, "uv_async_init")
        }
        retainOwner(self, in: asHandle(handle))
        shared.withLock { $0.async = handle }
    }

    /// post - queue `item` for the consumer; false when the mailbox is closed.
    @discardableResult
    public func post(_ item: Item) -> Bool {
        shared.withLock { state in
            guard let async = state.async else { return false }
            state.pending.append(item)
            /*
             * Wake the loop only on the first item of a batch. The send happens
             * under the lock so close() cannot free the handle between our check
             * and the send.
             */
            if state.pending.count == 1 { uv_async_send(async) }
            return true
        }
    }

    /// drain - take everything pending and hand it to the consumer (loop thread).
    ///
    /// Not re-entered: an item whose consumer closes the mailbox (a stop job)
    /// leaves the rest to the outer drain, which then takes whatever arrived
    /// meanwhile, so each producer's items keep their order.
    fileprivate func drain() {
        guard !draining else { return }
        draining = true
        defer { draining = false }
        repeat {
            var items = batch
            shared.withLock { swap(&$0.pending, &items) }
            for item in items { consumer(item) }
            items.removeAll(keepingCapacity: true)
            batch = items
        } while shared.withLock({ $0.async == nil && !$0.pending.isEmpty })
    }

    /// close - refuse further posts and close the wake-up handle (loop thread).
    public func close() {
        let async = shared.withLock { state -> UnsafeMutablePointer<uv_async_t>? in
            defer { state.async = nil }
            return state.async
        }
        if let async {
            drain()
            closeHandle(asHandle(async))
        }
    }

    func handleDidClose() {
        handle.deallocate()
    }

    func closeForShutdown() {
        close()
    }
}

/// mailboxWakeCallback - uv_async_cb: the loop was woken; drain the mailbox.
private func mailboxWakeCallback(_ async: UnsafeMutablePointer<uv_async_t>?) {
    guard let async, async.pointee.data != nil else { return }
    let box = Unmanaged<AnyObject>.fromOpaque(async.pointee.data!).takeUnretainedValue()
    (box as? any MailboxDraining)?.drainMailbox()
}

/// Lets the untyped async callback reach a generic mailbox.
private protocol MailboxDraining: AnyObject {
    func drainMailbox()
}

extension Mailbox: MailboxDraining {
    fileprivate func drainMailbox() { drain() }
}
