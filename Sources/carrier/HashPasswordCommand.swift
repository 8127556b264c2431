// HashPasswordCommand.swift - `carrier hash-password`: a users-file line for the SMTP listener

import ArgumentParser
import Injection
import SMTPStreams
import Spool

#if canImport(Glibc)
import Glibc
#endif

/// `carrier hash-password USER`: reads a password on standard input, prints a salted SCRAM line.
struct HashPasswordCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hash-password",
        abstract: "Make a users-file line (salted SCRAM-SHA-256 keys) for the SMTP listener.",
        discussion: """
        Reads the password from the first line of standard input and prints \
        `USER SCRAM-SHA-256$ITERATIONS:SALT$STOREDKEY:SERVERKEY [class=...] [campaign=...]`. \
        Append it to the file named by users_file in [smtp_listener]. The password itself is never stored.
        """
    )

    @Argument(help: "The user name (what the client gives to AUTH).")
    var user: String

    @Option(name: .customLong("class"), help: ArgumentHelp("The user's default class: transactional or bulk.", valueName: "class"))
    var priority: String?

    @Option(help: ArgumentHelp("The user's default campaign.", valueName: "name"))
    var campaign: String?

    @Option(help: ArgumentHelp("The user's tenant.", valueName: "name"))
    var tenant: String?

    @Option(help: ArgumentHelp("PBKDF2 iterations (at least 4096).", valueName: "count"))
    var iterations = 4096

    func run() throws {
        guard !user.isEmpty, !user.contains(where: { $0 == " " || $0 == "\t" || $0 == "\n" }) else {
            throw ValidationError("the user name must be non-empty and without spaces")
        }
        guard iterations >= SubmissionUsers.minimumIterations else { throw ValidationError("--iterations must be at least \(SubmissionUsers.minimumIterations)") }
        for (flag, value) in [("--campaign", campaign), ("--tenant", tenant)] {
            if let value, value.isEmpty || value.contains(where: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "=" }) {
                throw ValidationError("\(flag) must be non-empty, without spaces or '='")
            }
        }
        guard iterations <= SubmissionUsers.maximumIterations else { throw ValidationError("--iterations must be at most \(SubmissionUsers.maximumIterations)") }
        var defaults = SubmissionUserDefaults(campaign: campaign, tenant: tenant)
        if let priority {
            guard let parsed = PriorityClass(name: priority) else { throw ValidationError("--class must be transactional or bulk") }
            defaults.priority = parsed
        }
        guard let line = readLine(strippingNewline: true), !line.isEmpty else {
            throw ValidationError("give the password on standard input (one line)")
        }
        print(SubmissionUsers.line(user: user, password: line, defaults: defaults, iterations: iterations, crypto: OpenSSLCrypto()))
    }
}
