import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The calling process's mount table (/proc/self/mountinfo).
public enum Mounts {
    public struct Entry: Sendable {
        public var point: String
        public var type: String
    }

    public static func current() -> [Entry] {
        guard let info = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
        return info.split(separator: "\n").compactMap { line in
            // "id parent major:minor root mountpoint options [optional...] - fstype source superoptions"
            let halves = line.components(separatedBy: " - ")
            let fields = halves[0].split(separator: " ")
            guard halves.count == 2, fields.count >= 5, let type = halves[1].split(separator: " ").first else {
                return nil
            }
            return Entry(point: String(fields[4]), type: String(type))
        }
    }
}
