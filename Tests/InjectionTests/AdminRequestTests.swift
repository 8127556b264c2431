// AdminRequestTests.swift - the operator API's request bodies, checked before anything acts

import Foundation
@testable import Injection
import Testing

@Suite("Admin requests")
struct AdminRequestTests {
    /// parsed - the action a body asks for, or the field its problem names.
    private func parsed(_ body: String) -> String {
        switch AdminRequest.parse(Data(body.utf8), now: 1_000_000) {
        case .success(let action): return "\(action)"
        case .failure(let problem): return "field \(problem.field)"
        }
    }

    /// A duration too long to add to the clock is refused with 400 naming it (it overflowed
    /// and trapped: any holder of the token could stop the process).
    @Test func anEnormousDurationIsRefusedNotATrap() {
        #expect(parsed(#"{"action":"suspend","domain":"a.test","duration":10000000000000000}"#) == "field duration")
        #expect(parsed(#"{"action":"suspend","domain":"a.test","duration":"106751991167d"}"#) == "field duration")
        #expect(parsed(#"{"action":"suspend","domain":"a.test","duration":"3651d"}"#) == "field duration")
        #expect(parsed(#"{"action":"suspend","domain":"a.test","duration":"3650d"}"#).contains("suspend"))
        #expect(parsed(#"{"action":"suspend","domain":"a.test","duration":"90s"}"#).contains("1090000"))
    }
}
