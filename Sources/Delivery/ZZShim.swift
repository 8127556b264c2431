// temporary until the helper's DeliveryLog lands
public enum DeliveryEvent: String, Sendable { case received, delivered, deferred, bounced, expired }
public struct DeliveryLogRecord: Sendable {
    public var time: Int64; public var event: DeliveryEvent; public var messageID: String; public var recipient: String
    public var campaign: String; public var site: String; public var host: String?; public var code: Int?; public var enhancedCode: String?
    public var text: String?; public var attempt: Int; public var latencyMilliseconds: Double?; public var nextAttempt: Int64?
}
public struct DeliveryLogError: Error, Sendable {}
public final class DeliveryLog: Sendable {
    public init(path: String, maxBytes: Int) throws(DeliveryLogError) {}
    public func append(_ record: DeliveryLogRecord) {}
    public func close() {}
}
