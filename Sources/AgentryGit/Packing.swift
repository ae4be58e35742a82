import CGit2
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Every history record adds a handful of loose objects (its blobs, the trees above them, the
/// commit), one file each: a service that runs all day would fill its repository with millions of
/// files, and libgit2, unlike git, never packs them. So agentry packs, as `git gc --auto` would:
/// the history writer puts the loose objects into one pack once there are about as many as git
/// allows (quick: a few thousand small objects), and the service, in the background, makes its
/// packs one once there are too many of them (slow on a large repository).
///
/// Safe beside other writers and readers without a lock on them: an object is removed only once
/// the pack that holds it is written and flushed to disk (a reader that misses it loose finds it
/// packed), only what was there before packing began is removed, and a pack is replaced only when
/// it is complete and has been there a minute (a fetch may be writing it).
extension GitRepository {
    public struct PackingLimits: Sendable {
        /// Loose objects in the fan-out folder `17/` above which they are packed: git's own
        /// `gc.auto` estimate (6700 in all, about 27 a folder).
        public var looseInSample: Int
        /// Packs above which they are made one (git's `gc.autoPackLimit`).
        public var packs: Int
        /// How old a pack must be to be replaced.
        public var settledPack: TimeInterval

        public init(looseInSample: Int = 27, packs: Int = 50, settledPack: TimeInterval = 60) {
            self.looseInSample = looseInSample
            self.packs = packs
            self.settledPack = settledPack
        }
    }

    /// What a packing did.
    public struct Packed: Sendable, Equatable {
        public var looseRemoved: Int
        public var packsRemoved: Int
    }

    /// The objects folder a linked work tree shares with its main repository.
    var objectsFolder: String { commonFolder + "objects" }
    var commonFolder: String {
        let common = String(cString: git_repository_commondir(handle))
        return common.hasSuffix("/") ? common : common + "/"
    }

    /// Packs what `limits` say is due (one folder read when nothing is): the loose objects, and
    /// when `consolidating`, the packs. Nil when nothing was due, or another process is packing
    /// this repository now. The repository's own `gc.auto` and `gc.autoPackLimit` count over
    /// `limits`, as git reads them (0: never).
    @discardableResult
    public func packIfDue(_ given: PackingLimits = PackingLimits(), consolidating: Bool = false) throws -> Packed? {
        var limits = given
        if let loose = configuredInt("gc.auto") {
            guard loose > 0 else { return nil }
            limits.looseInSample = min(loose, 1 << 40) / 256 + 1
        }
        if let packs = configuredInt("gc.autoPackLimit") { limits.packs = packs > 0 ? packs : Int.max }
        let sample = (try? FileManager.default.contentsOfDirectory(atPath: objectsFolder + "/17")) ?? []
        let looseDue = sample.filter(Self.isLooseName).count > limits.looseInSample
        let packsDue = consolidating && replaceablePacks(settled: limits.settledPack).count > limits.packs
        guard looseDue || packsDue else { return nil }
        // One packer at a time (an flock, released if it dies); a busy one is left to it.
        let descriptor = Glibc.open(commonFolder + "agentry-packing.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else { return nil }
        defer { flock(descriptor, LOCK_UN) }
        removeAbandonedPacks()
        return try pack(replacing: packsDue ? replaceablePacks(settled: limits.settledPack) : [])
    }

    /// The loose objects into one pack, with every object of the repository when packs are to be
    /// `replaced`; then those packs and the loose objects found at the start removed.
    func pack(replacing oldPacks: [String]) throws -> Packed {
        let loose = looseObjects()
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
        // On disk before anything it replaces goes (libgit2 does not flush what it writes unless
        // told to): a power cut never leaves neither.
        guard let written, Self.flush(objectsFolder + "/pack/" + written + ".pack"),
            Self.flush(objectsFolder + "/pack/" + written + ".idx"), Self.flush(objectsFolder + "/pack")
        else {
            throw GitError(code: .other(-1), operation: "write a pack", message: "the new pack could not be flushed")
        }
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

    /// fsync of a file or folder; whether it worked.
    static func flush(_ path: String) -> Bool {
        let descriptor = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        return fsync(descriptor) == 0
    }

    /// A number from the repository's configuration, if it has one.
    func configuredInt(_ name: String) -> Int? {
        var config: OpaquePointer?
        guard git_repository_config_snapshot(&config, handle) == 0, let config else { return nil }
        defer { git_config_free(config) }
        var value: Int64 = 0
        return git_config_get_int64(&value, config, name) == 0 ? Int(value) : nil
    }

    /// `pack-<hash>` of the packs agentry may replace: complete (libgit2 puts a pack's index in
    /// place before the pack), there for `settled` seconds at least, and none another tool keeps
    /// for a reason (`.keep`, a promisor's, a cruft pack's `.mtimes`). None at all when a
    /// multi-pack-index git maintains covers them, or objects are borrowed from elsewhere
    /// (alternates: consolidating would copy them in).
    func replaceablePacks(settled: TimeInterval) -> [String] {
        let folder = objectsFolder + "/pack"
        let names = Set((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [])
        guard !names.contains(where: { $0.hasPrefix("multi-pack-index") }),
            !FileManager.default.fileExists(atPath: objectsFolder + "/info/alternates")
        else { return [] }
        let now = Date()
        return names.filter { $0.hasPrefix("pack-") && $0.hasSuffix(".idx") }.map { String($0.dropLast(4)) }
            .filter { name in
                guard names.contains(name + ".pack"),
                    ![".keep", ".promisor", ".mtimes"].contains(where: { names.contains(name + $0) }),
                    let modified = try? FileManager.default.attributesOfItem(atPath: folder + "/" + name + ".pack")[
                        .modificationDate] as? Date
                else { return false }
                return now.timeIntervalSince(modified) >= settled
            }.sorted()
    }

    /// What a packing stopped midway left (libgit2's temporary pack files), once an hour old.
    func removeAbandonedPacks() {
        let folder = objectsFolder + "/pack"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        where name.hasPrefix("pack_git2_") {
            let path = folder + "/" + name
            guard let modified = try? FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date,
                Date().timeIntervalSince(modified) > 3600
            else { continue }
            unlink(path)
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
