import CGit2
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Every history record adds a handful of loose objects (its blobs, the trees above them, the
/// commit), one file each: a service that runs all day would fill its repository with millions of
/// files, and libgit2, unlike git, never packs them. So the history writer packs, as `git gc
/// --auto` would: the loose objects into one pack once there are about as many as git allows,
/// and all packs into one once there are too many of them.
///
/// Safe beside other writers and readers without a lock on them: an object is removed only once
/// the pack that holds it is in place (a reader that misses it loose finds it packed), and only
/// what was there before packing began is removed.
extension GitRepository {
    public struct PackingLimits: Sendable {
        /// Loose objects in the fan-out folder `17/` above which they are packed: git's own
        /// `gc.auto` estimate (6700 in all, about 27 a folder).
        public var looseInSample: Int
        /// Packs above which they are all made one (git's `gc.autoPackLimit`).
        public var packs: Int

        public init(looseInSample: Int = 27, packs: Int = 50) {
            self.looseInSample = looseInSample
            self.packs = packs
        }
    }

    /// What a packing did.
    public struct Packed: Sendable, Equatable {
        public var looseRemoved: Int
        public var packsRemoved: Int
    }

    var objectsFolder: String { gitFolder + "objects" }
    var gitFolder: String { gitDirectory.hasSuffix("/") ? gitDirectory : gitDirectory + "/" }

    /// Packs when `limits` say it is due (one folder read when it is not); nil when it was not due,
    /// or another process is packing this repository now. The repository's own `gc.auto` and
    /// `gc.autoPackLimit` count over `limits`, as git reads them (0: never).
    @discardableResult
    public func packIfDue(_ given: PackingLimits = PackingLimits()) throws -> Packed? {
        var limits = given
        if let loose = configuredInt("gc.auto") {
            guard loose > 0 else { return nil }
            limits.looseInSample = (loose + 255) / 256
        }
        if let packs = configuredInt("gc.autoPackLimit") { limits.packs = packs > 0 ? packs : Int.max }
        let sample = (try? FileManager.default.contentsOfDirectory(atPath: objectsFolder + "/17")) ?? []
        let looseDue = sample.filter(Self.isLooseName).count > limits.looseInSample
        let packsDue = packNames().count > limits.packs
        guard looseDue || packsDue else { return nil }
        // One packer at a time (an flock, released if it dies); a busy one is left to it.
        let descriptor = Glibc.open(gitFolder + "agentry-packing.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else { return nil }
        defer { flock(descriptor, LOCK_UN) }
        return try pack(all: packsDue)
    }

    /// The loose objects into one pack (and, when `all`, every object with them, the old packs
    /// removed), then the loose ones removed.
    func pack(all: Bool) throws -> Packed {
        let loose = looseObjects()
        // Packs another tool keeps for a reason (`.keep`, a promisor's, or indexed by a
        // multi-pack-index git maintains) are left as they are, and then so is every pack.
        let oldPacks = all && packsAreOurs() ? packNames() : []
        var builder: OpaquePointer?
        var result = git_packbuilder_new(&builder, handle)
        guard result == 0, let builder else { throw GitError.last(result, "start a pack") }
        defer { git_packbuilder_free(builder) }
        // One thread: packing gives way to the work it is packing for.
        git_packbuilder_set_threads(builder, 1)
        if oldPacks.isEmpty {
            for (oid, _) in loose {
                var id = oid
                result = git_packbuilder_insert(builder, &id, nil)
                guard result == 0 else { throw GitError.last(result, "pack \(ObjectID(oid))") }
            }
        } else {
            var odb: OpaquePointer?
            result = git_repository_odb(&odb, handle)
            guard result == 0, let odb else { throw GitError.last(result, "open the object database") }
            defer { git_odb_free(odb) }
            let box = Unmanaged.passRetained(PackBuilderBox(builder))
            defer { box.release() }
            result = git_odb_foreach(
                odb,
                { oid, payload in
                    guard let oid, let payload else { return -1 }
                    let builder = Unmanaged<PackBuilderBox>.fromOpaque(payload).takeUnretainedValue().builder
                    return git_packbuilder_insert(builder, oid, nil)
                }, box.toOpaque())
            guard result == 0 else { throw GitError.last(result, "pack every object") }
        }
        guard git_packbuilder_object_count(builder) > 0 else { return Packed(looseRemoved: 0, packsRemoved: 0) }
        result = git_packbuilder_write(builder, objectsFolder + "/pack", 0, nil, nil)
        guard result == 0 else { throw GitError.last(result, "write a pack") }
        let written = git_packbuilder_name(builder).map { "pack-" + String(cString: $0) }
        // Everything packed is in place: what was there before can go.
        var removedPacks = 0
        for name in oldPacks where name != written {
            for suffix in [".idx", ".pack", ".rev", ".bitmap"] { unlink(objectsFolder + "/pack/" + name + suffix) }
            removedPacks += 1
        }
        for (_, path) in loose { unlink(path) }
        // This repository looks again at what packs there are.
        var odb: OpaquePointer?
        if git_repository_odb(&odb, handle) == 0, let odb {
            git_odb_refresh(odb)
            git_odb_free(odb)
        }
        return Packed(looseRemoved: loose.count, packsRemoved: removedPacks)
    }

    /// A number from the repository's configuration, if it has one.
    func configuredInt(_ name: String) -> Int? {
        var config: OpaquePointer?
        guard git_repository_config_snapshot(&config, handle) == 0, let config else { return nil }
        defer { git_config_free(config) }
        var value: Int64 = 0
        return git_config_get_int64(&value, config, name) == 0 ? Int(value) : nil
    }

    /// `pack-<hash>` of each pack, by its index.
    func packNames() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: objectsFolder + "/pack")) ?? []
        return names.filter { $0.hasPrefix("pack-") && $0.hasSuffix(".idx") }.map { String($0.dropLast(4)) }
    }

    /// Whether every pack is one agentry may replace: none kept, none a promisor's, no
    /// multi-pack-index over them.
    func packsAreOurs() -> Bool {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: objectsFolder + "/pack")) ?? []
        return !names.contains {
            $0.hasSuffix(".keep") || $0.hasSuffix(".promisor") || $0.hasPrefix("multi-pack-index")
        }
    }

    /// Each loose object's id and file.
    func looseObjects() -> [(git_oid, String)] {
        var found: [(git_oid, String)] = []
        let folders = (try? FileManager.default.contentsOfDirectory(atPath: objectsFolder)) ?? []
        for folder in folders where folder.count == 2 && folder.allSatisfy(\.isHexDigit) {
            let path = objectsFolder + "/" + folder
            for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] where Self.isLooseName(name)
            {
                var oid = git_oid()
                guard git_oid_fromstr(&oid, folder + name) == 0 else { continue }
                found.append((oid, path + "/" + name))
            }
        }
        return found
    }

    static func isLooseName(_ name: String) -> Bool {
        name.utf8.count == 38 && name.allSatisfy(\.isHexDigit)
    }
}

/// The pack builder, handed through `git_odb_foreach`'s payload.
final class PackBuilderBox {
    let builder: OpaquePointer
    init(_ builder: OpaquePointer) { self.builder = builder }
}
