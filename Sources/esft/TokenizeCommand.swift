import ESFTData
import ESFTKernels
import Foundation

enum TokenizeCommand {
    static let help = """
    Usage: esft tokenize --tokenizer T (--text STRING | --input FILE) [--decode | --throughput]

    Prints the token ids of each input as one JSON array per line, in input order.

      --tokenizer T   'bytes' (one id per UTF-8 byte; BOS 256, EOS 257, PAD 258), or a Hugging Face
                      tokenizer.json (or a directory holding one)
      --text STRING   one input
      --input FILE    one input per line; for a .jsonl file each line is a JSON object and the text
                      encoded is its "text", or for "messages" the chat layout as one string
                      ("User: {q}\\n\\nAssistant: {a}" per turn, without BOS/EOS; esft data prepare
                      encodes the same pieces separately and adds BOS/EOS)
      --decode        the other way: each input is a JSON array of ids (e.g. --text "[1,2,3]"); prints
                      its text (special tokens: dropped by 'bytes', spelled out by tokenizer.json)
      --throughput    instead of ids, print encoding speed on one thread over all inputs: the first
                      pass with a freshly loaded tokenizer, then the mean of 3 warm passes (MB = 10^6
                      bytes of UTF-8 text)
    No special tokens are added when encoding.
    """

    static func run(_ argv: [String]) throws {
        var args = Arguments(argv, command: "tokenize")
        if args.wantsHelp { print(help); return }
        let spec = try args.required("--tokenizer")
        let text = try args.option("--text"), input = try args.option("--input")
        let decode = args.flag("--decode"), throughput = args.flag("--throughput")
        try args.finish()
        if decode && throughput { throw ESFTError("tokenize: --decode and --throughput exclude each other") }
        guard (text == nil) != (input == nil) else { throw ESFTError("tokenize: give exactly one of --text and --input") }
        let tokenizer = try LoadedTokenizer.textTokenizer(spec)  // adds no BOS/EOS, so needs none
        let lines: [(where: String, text: String)]
        if let text {
            lines = [("--text", text)]
        } else if let input, input.hasSuffix(".jsonl"), !decode {
            lines = try JSONLInput(path: input, skipBad: false).records.map { ("\(input):\($0.line)", ChatFormat.text(of: $0.parts)) }
        } else {
            lines = try textLines(input!)
        }
        if throughput {
            let all = lines.map(\.text).joined(separator: "\n")
            let fresh = TokenizerBenchmark.encodeThroughput(tokenizer: tokenizer, text: all)
            let warm = TokenizerBenchmark.encodeThroughput(tokenizer: tokenizer, text: all, passes: 3)
            print(String(format: "%d bytes in %d inputs: fresh %.2f MB/s, warm %.2f MB/s (one thread)", all.utf8.count, lines.count, fresh, warm))
            return
        }
        var out = ""
        for (place, line) in lines {
            if decode {
                out += try decodeLine(line, place: place, tokenizer: tokenizer) + "\n"
            } else {
                out += "[" + tokenizer.encode(line).map(String.init).joined(separator: ",") + "]\n"
            }
            if out.utf8.count > 1 << 20 { FileHandle.standardOutput.write(Data(out.utf8)); out = "" }
        }
        FileHandle.standardOutput.write(Data(out.utf8))
    }

    /// A JSON array of ids → text. Every id must be an integer (true is not 1, 2.5 is not 2) below the
    /// vocabulary size: an id the tokenizer does not have is an error naming it, never dropped.
    static func decodeLine(_ line: String, place: String, tokenizer: any TextTokenizer) throws -> String {
        guard case .array(let items)? = try? JSONValue.parse(Data(line.utf8), source: place) else {
            throw ESFTError("\(place): expected a JSON array of integer token ids, got '\(line.prefix(60))'")
        }
        var ids: [Int32] = []
        for (i, item) in items.enumerated() {
            let reader = JSONReader(value: item, source: place, path: "[\(i)]")
            guard case .number(let text) = item, let id = Int(text), id >= 0, id < tokenizer.vocabSize else {
                throw ESFTError(ErrorText.field(place, "id [\(i)]", "\(reader.describe) is not a token id of this tokenizer (integers 0..<\(tokenizer.vocabSize))"))
            }
            ids.append(Int32(id))
        }
        return tokenizer.decode(ids)
    }

    /// Lines of a UTF-8 text file (a final newline does not start another line).
    static func textLines(_ path: String) throws -> [(String, String)] {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch { throw ESFTError("\(path): cannot read (\(ErrorText.reason(error)))") }
        var slices = [UInt8](data).split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        if slices.last?.isEmpty == true { slices.removeLast() }
        return try slices.enumerated().map { i, slice in
            guard let s = String(validating: slice, as: UTF8.self) else { throw ESFTError("\(path):\(i + 1): not valid UTF-8") }
            return ("\(path):\(i + 1)", s)
        }
    }
}
