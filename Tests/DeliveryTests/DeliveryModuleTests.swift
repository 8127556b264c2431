// DeliveryModuleTests.swift - placeholder so the test target exists; real suites sit beside it.
import Testing
@testable import Delivery
