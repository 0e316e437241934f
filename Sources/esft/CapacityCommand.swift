import ESFTKernels
import ESFTMethod
import ESFTModel
import ESFTTrain
import Foundation

/// `esft plan` (capacity form): see PlanCommand.help.
enum CapacityCommand {
    static func run(_ args: inout Arguments) throws {
        try args.finish()
        throw ESFTError("plan: the capacity form is not built yet")
    }
}
