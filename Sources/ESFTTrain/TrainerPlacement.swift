import ESFTBase
import ESFTMethod
import ESFTModel
import ESFTParallel
import Foundation

extension Trainer {
    /// The job's expert placement from `--placement` (every rank computes the same one from the same
    /// inputs; ranks compare a digest so a difference can never go unnoticed).
    static func placement(_ options: TrainOptions, model: ModelConfig, ranks: Int, selection: TrainableSelection,
                          comm: Communicator, log: (String) -> Void) throws -> ExpertPlacement {
        let kind = try PlacementKind.parse(options.placement)
        let e = model.nRoutedExperts
        guard e > 0, kind != .contiguous else {
            if !options.placementRouting.isEmpty && kind != .affinity { log("esft train: note: --placement-routing is used by --placement affinity only; ignored") }
            return ExpertPlacement(experts: e, ranks: ranks)
        }
        var trainable: [Int: [Int]] = [:]
        switch selection {
        case .experts(let cfg, _): trainable = cfg.experts
        case .full: for l in model.moeLayers { trainable[l] = Array(0..<e) }
        }
        var routing: [Int: LayerRouting] = [:]
        if kind == .affinity {
            guard !options.placementRouting.isEmpty else {
                throw ESFTError("--placement affinity needs --placement-routing DIR: routing logs (expert_weights_<layer>.txt, one per MoE layer) whose co-chosen experts it groups")
            }
            let logs = try ReferenceRoutingLogs(directory: URL(fileURLWithPath: options.placementRouting), topK: model.expertsPerToken, experts: e)
            let moe = Set(model.moeLayers)
            if let extra = logs.layers.first(where: { !moe.contains($0) }) {
                throw ESFTError("--placement-routing \(options.placementRouting): layer \(extra) is not an MoE layer of the model (MoE layers \(model.moeLayers.first!)...\(model.moeLayers.last!))")
            }
            routing = try logs.layerRoutings()
            let missing = model.moeLayers.filter { routing[$0] == nil }
            if !missing.isEmpty { log("esft train: --placement affinity: no routing for layer(s) \(missing); they keep contiguous blocks") }
        }
        let placement = try PlacementPlanner().plan(kind, experts: e, ranks: ranks, moeLayers: model.moeLayers,
                                                    trainable: trainable, routing: routing)
        var digest = FNV1a64()
        for l in model.moeLayers { digest.add("\(l):\(placement.layer(l).ownerArray)\n") }
        let digests = try comm.allGather(Int64(bitPattern: digest.value), tag: "placement")
        guard Set(digests).count == 1 else { throw ESFTError("--placement \(kind.rawValue): the ranks computed different placements (their inputs differ?)") }
        return placement
    }
}
