import CHDF5

/// HDF5 records why a call failed on its error stack (innermost: the specific cause, such as "file
/// signature not found" or "unable to lock file"). Its automatic printing stays off (it would go to stderr
/// out of order, on every rank); instead a failure's message carries what the stack says.
enum HDF5ErrorStack {
    /// " (HDF5: <innermost cause>; <next>)" for the failure just seen, or "" when the stack is empty;
    /// clears the stack. Each HDF5 API call clears it on entry, so it holds the last failed call's errors.
    static var detail: String {
        var descriptions: [String] = []
        withUnsafeMutablePointer(to: &descriptions) { box in
            _ = H5Ewalk2(0 /* H5E_DEFAULT */, H5E_WALK_UPWARD, { _, error, context in
                guard let error, let context, let text = error.pointee.desc else { return 0 }
                let list = context.assumingMemoryBound(to: [String].self)
                // One line each, without the volatile parts (HDF5 adds the time of an open failure).
                let description = String(cString: text).replacingOccurrences(of: "\n", with: " ")
                    .replacingOccurrences(of: #",? ?time = [^,]*,"#, with: ",", options: .regularExpression)
                if !description.isEmpty, !list.pointee.contains(description) { list.pointee.append(description) }
                return 0
            }, box)
        }
        H5Eclear2(0)
        guard !descriptions.isEmpty else { return "" }
        return " (HDF5: " + descriptions.prefix(3).joined(separator: "; ") + ")"
    }
}
