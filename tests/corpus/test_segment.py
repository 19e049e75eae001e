"""Sentence segmentation: real Hindi lines from the shared corpus, split by hand, and edge cases."""

from __future__ import annotations

import pytest

from beam_pipelines.corpus.segment import split_line, split_sentences

NAV_BAR = ("होम | दबंग चुनावी दंगल | देश | विदेश | राजनीति | मध्य प्रदेश | छत्तीसगढ़ | खेल-खिलाड़ी | कारोबार | "
           "सिनेमा | धर्म एवं ज्योतिष | जरा हटके | पर्यटन | हेल्थ | केरियर |")

# (file under the shared corpus, 1-based line number, the sentences written by hand)
REAL_LINES = [
    ("documents/online_hindi_blogs_hi.txt", 2627, [
        "शरीर बिछुड़ने और दूर में बसने से क्या होगा?",
        "केवल दृष्टि का अंतर है.",
        "मेरा प्राण और मेरी आत्मा तुम्हारे पास है.",
    ]),
    ("documents/online_hindi_blogs_hi.txt", 423, [  # '.' as a danda; a decimal number
        "जी हाँ, आपका निवेश मैनेज करने के लिए AMCs आपसे transaction charge, exit load, इत्यादि charges लेती है.",
        "यह चार्ज आपके कुल निवेश का अधिकतम 2.5% तक हो सकता है.",
    ]),
    ("documents/online_hindi_blogs_hi.txt", 1985, [  # '|' typed without a space before it
        "समाज के लिए अच्छा इंसान भी बनना है, लेकिन खुद के लिए भी सोचना है|",
        "बेटी, पत्नी, बहू, माँ के बीच खुद की पहचान को भी नहीं घुलाना है|",
    ]),
    ("documents/mann_ki_baat_hi.txt", 14, [  # ' |' followed directly by the next word
        "शांति की स्थापना के लिए जहाँ उन्होंने अद्भुत क्षमता दिखायी है वहीँ हमलावरों को भी उन्हीं की भाषा में "
        "जबाव देने का काम किया है |",
        "आपने देखा होगा कि हमले के 100 घन्टे के भीतर ही किस प्रकार से कदम उठाये गये हैं |",
    ]),
    ("documents/mann_ki_baat_hi.txt", 1910, [  # a Latin 'I' as the danda
        "हमारे नौजवानों के लिए तो खुशी की खबर है कि भारत में 6 से 28 अक्टूबर तक FIFA Under 17 World Cup का "
        "आयोजन होने जा रहा है I",
    ]),
    ("documents/hindi_discourse_stories_hi.txt", 526, [  # quotes stay with their sentence
        '" पता नहीं जिंदा है कि मर गया।"',
        "एक चपरासी ने पूछा।",
        '"मर गया होगा।',
    ]),
    ("documents/bhagavad_gita_hindi_translations_hi.txt", 1341, [  # verse number, '?",' inside a quote
        "।।16.15।।",
        '"मैं धनवान् और श्रेष्ठकुल में जन्मा हूँ।',
        "मेरे समान दूसरा कौन है?\",'मैं यज्ञ करूंगा', 'मैं दान दूँगा', 'मैं मौज करूँगा' - इस प्रकार के अज्ञान से "
        "वे मोहित होते हैं।।",
    ]),
    ("oscar/oscar2019_unshuffled_deduplicated_hi_hi_part_1.sample.txt", 2, [  # danda without space; म.प्र.
        "जबलपुर।",
        "सृजनशील एवं प्रगतिशील युवक-युवतियों हेतु खाद्य प्रसंस्करण, सूचना प्रौद्योगिकी स्मार्ट फोन मरम्मत पर आधारित "
        "तकनीकी उद्यमिता विकास कार्यक्रम के आयोजन हेतु उद्यमिता विकास केन्द्र म.प्र. (सेडमैप) क्षेत्रीय प्रशिक्षण "
        "कार्यालय उद्योग भवन कटंगा में १६ अगस्त तक इच्छुक व्यक्ति आवेदन जमा कर सकता है।",
        "इस तकनीकी पर आधारित उद्यमिता विकास प्रशिक्षण कार्यक्रम के प्रायोजक विज्ञान एवं तकनीकी विभाग भारत सरकार "
        "नई दिल्ली हैं जबकि सहयोग जिला व्यापार एवं उद्योग केन्द्र जबलपुर का है।",
    ]),
    ("sentences/vardial2018_ili_hindi_hi.txt", 237, [  # डॉ. without a space; a spaced final '?'
        "करते करते यजन, हाथ जलने लगे (डॉ.रूपचन्द्र शास्त्री मयंक ) : घर पर बरनोल है ना ?",
    ]),
    ("sentences/vardial2018_ili_hindi_hi.txt", 861, [
        "उनमे गजब की हिम्मतथी वो हर नए काम को करना चाहती थी ,पढ़ने का उन्हें बहुत शौक था |",
        "हर विषय की जानकारी रखती थी |",
    ]),
    ("sentences/wmt14_newstest2014_hi.txt", 566, [  # डॉ. is an abbreviation
        "डॉ. आशुतोष कुमार राय और ईशा घोष के सहयोग से प्रशिक्षण का दायित्व पूरा किया जा रहा है।",
    ]),
    # A news site's navigation bar (the same bar is lines 6, 12 and 17 of the original sample):
    # one piece, not 15 one-item "sentences".
    ("oscar/oscar2019_unshuffled_deduplicated_hi_hi_part_1.sample.txt", 6, [NAV_BAR]),
    ("oscar/oscar2019_unshuffled_original_hi_hi_part_1.sample.txt", 17, [NAV_BAR]),
    # '|' as a danda between short sentences still splits: unspaced '|' and clause-final words
    # (धन्यवाद, नमस्कार); items of 5-6 words ending in नहीं; two short items only.
    ("documents/mann_ki_baat_hi.txt", 10527, [
        "भीतर के आनंद को सेवा भाव से प्रकट करते हुए चल पड़ें |",
        "बहुत-बहुत धन्यवाद |",
        "नमस्कार |",
    ]),
    ("sentences/vardial2018_ili_hindi_hi.txt", 3542, [
        "rt @ndtvindia: सूत्र: लैंड बिल पर pm के कोर ग्रुप की बैठक खत्म |",
        "सरकार झुकने के मूड में नहीं |",
        "सर्वदलीय बैठक के आसार नहीं |",
        "#landacquisitio…",
    ]),
    ("documents/devdas_novel_hi.txt", 914, [
        "'छि: |",
        "ऐसा न कहो पत्तो |",
        "विदाई के अंतिम दिनो मे सिर्फ एक निशान बनाये रखने के लिए यह",
    ]),
    ("sentences/vardial2018_ili_hindi_hi.txt", 3378, [
        "बेन करना ही है तो सबसे पहले बैंगन बेन करो |",
        "घर वालो ने साला हैरान कर दिया है |",
        "#beefban",
    ]),
    ("sentences/tico19_test_hi.txt", 219, [  # 'प्रकार I' is a Roman numeral, not a danda
        "विभिन्न मार्गों द्वारा, वायरस प्रदाह कारकों की अभिव्यक्ति, डेंड्रिटिक कोशिकाओं की परिपक्वता और प्रकार I "
        "इंटरफेरॉन (IFNs) का संश्लेषण प्रेरित करता है जो वायरस के प्रसार को सीमित करता है और वायरल प्रतिजनों के "
        "मेक्रोफेज फेगोसाइटोसिस में तेजी लाता है।",
    ]),
]


@pytest.mark.parametrize("path,line_no,expected", REAL_LINES, ids=[f"{p.split('/')[-1]}:{n}" for p, n, _ in REAL_LINES])
def test_real_lines(shared_corpus, path, line_no, expected):
    line = (shared_corpus / path).read_text("utf-8").split("\n")[line_no - 1]
    assert split_line(line) == expected


EDGE_CASES = [
    ("empty", "", []),
    ("blank", "   ", []),
    ("no_terminator", "बिना विराम का वाक्य", ["बिना विराम का वाक्य"]),
    ("double_danda", "राम॥ श्याम॥", ["राम॥", "श्याम॥"]),
    ("question_exclamation_run", "क्या?! हाँ!!! ठीक है", ["क्या?!", "हाँ!!!", "ठीक है"]),
    ("question_inside_word_kept", "देखें example.com/?q=1 पर", ["देखें example.com/?q=1 पर"]),
    ("pipe_spaced", "नमस्कार | आज बात करेंगे |", ["नमस्कार |", "आज बात करेंगे |"]),
    ("pipe_unspaced", "नमस्कार|आज", ["नमस्कार|", "आज"]),
    ("pipe_between_latin_kept", "a|b और c", ["a|b और c"]),
    ("i_after_final_word", "यह बात है I आज हम मिले I", ["यह बात है I", "आज हम मिले I"]),
    ("i_before_english", "मैंने कहा है I am fine", ["मैंने कहा है I am fine"]),
    ("roman_numeral_i", "श्रेणी I अणुओं का", ["श्रेणी I अणुओं का"]),
    ("abbrev_dr_shri", "डॉ. राम और श्री. श्याम आए। Dr. Rao भी।", ["डॉ. राम और श्री. श्याम आए।", "Dr. Rao भी।"]),
    ("abbrev_eg", "फल e.g. आम. केला भी", ["फल e.g. आम.", "केला भी"]),
    ("inner_dots_abbrev", "वह U.S. गया. फिर लौटा", ["वह U.S. गया.", "फिर लौटा"]),
    ("devanagari_initials", "ए. आर. रहमान आए. वे गाए", ["ए. आर. रहमान आए.", "वे गाए"]),
    ("latin_initial", "J. K. Rowling ने लिखा.", ["J. K. Rowling ने लिखा."]),
    ("decimal", "दर 1.37 से 0.29 हुई. अब ठीक", ["दर 1.37 से 0.29 हुई.", "अब ठीक"]),
    ("list_number", "1. पहला बिंदु है। 2. दूसरा", ["1. पहला बिंदु है।", "2. दूसरा"]),
    ("ellipsis_mid_line", "वह... चला गया। और…", ["वह... चला गया।", "और…"]),
    ("ellipsis_end", "रुको...", ["रुको..."]),
    ("lowercase_after_period", "see fig. a below", ["see fig. a below"]),
    ("closing_quote_and_paren", "उसने कहा 'जाओ।' (ठीक है?) फिर", ["उसने कहा 'जाओ।'", "(ठीक है?)", "फिर"]),
    ("curly_quotes", "“चलो।” वह बोला।", ["“चलो।”", "वह बोला।"]),
    ("punctuation_only_joins_next", "। । हो गया", ["। । हो गया"]),
    ("punctuation_only_joins_previous", "हो गया। ।", ["हो गया। ।"]),
    ("fullwidth", "क्या？ हाँ！", ["क्या？", "हाँ！"]),
]


@pytest.mark.parametrize("name,line,expected", EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_edge_cases(name, line, expected):
    assert split_line(line) == expected


# Menus: a run of at least 3 items of at most 4 words, separated by spaced '|', with no clause
# (see the module docstring), is one piece.
MENU_CASES = [
    ("bar_at_line_end", "होम | देश | विदेश | खेल | मनोरंजन", ["होम | देश | विदेश | खेल | मनोरंजन"]),
    ("bar_closing_pipe", "होम | देश | विदेश |", ["होम | देश | विदेश |"]),
    ("bar_closing_unspaced_pipe", "होम | देश | विदेश|", ["होम | देश | विदेश|"]),
    ("bar_leading_pipe", "| होम | देश | विदेश |", ["| होम | देश | विदेश |"]),
    # the header planted in the bundled sample (scripts/make_sample_corpus.py): करें ends menu items
    ("bar_imperative_item", "मुख्य पृष्ठ | समाचार | खेल | मनोरंजन | संपर्क करें",
     ["मुख्य पृष्ठ | समाचार | खेल | मनोरंजन | संपर्क करें"]),
    ("bar_four_word_item", "हमारे बारे में जानें | गोपनीयता नीति | नियम और शर्तें",
     ["हमारे बारे में जानें | गोपनीयता नीति | नियम और शर्तें"]),
    ("table_row", "SKU: PRD18530 | Brand: Example Electronics | Warranty: 1 Year Manufacturer",
     ["SKU: PRD18530 | Brand: Example Electronics | Warranty: 1 Year Manufacturer"]),
    ("two_items_split", "लॉग इन करें | रजिस्टर करें", ["लॉग इन करें |", "रजिस्टर करें"]),
    ("bar_then_sentence", "होम | देश | विदेश | आज दिल्ली में भारी बारिश हुई |",
     ["होम | देश | विदेश |", "आज दिल्ली में भारी बारिश हुई |"]),
    ("bar_then_short_sentence", "होम | देश | विदेश | बारिश हुई |", ["होम | देश | विदेश |", "बारिश हुई |"]),
    ("bar_then_sentence_without_pipe", "होम | देश | विदेश | खेल | मनोरंजन आज दिल्ली में बारिश हुई।",
     ["होम | देश | विदेश | खेल |", "मनोरंजन आज दिल्ली में बारिश हुई।"]),
    ("sentence_then_bar", "यह खबर पुरानी है | होम | देश | विदेश", ["यह खबर पुरानी है |", "होम | देश | विदेश"]),
    ("danda_sentence_then_bar", "यह खबर पुरानी है। होम | देश | विदेश", ["यह खबर पुरानी है।", "होम | देश | विदेश"]),
    ("two_bars_around_sentence", "होम | देश | विदेश | यह खबर बहुत पुरानी हो चुकी है | खेल | फिल्म | टीवी",
     ["होम | देश | विदेश |", "यह खबर बहुत पुरानी हो चुकी है |", "खेल | फिल्म | टीवी"]),
    ("short_sentences_final_verb", "वह घर गया | उसने खाना खाया | फिर सो गया |",
     ["वह घर गया |", "उसने खाना खाया |", "फिर सो गया |"]),
    ("short_sentences_ergative", "सीता ने खाना खाया | मोहन ने पानी पिया | गीता ने गाना गाया |",
     ["सीता ने खाना खाया |", "मोहन ने पानी पिया |", "गीता ने गाना गाया |"]),
    ("short_sentences_future", "वह कल आएगा | हम भी चलेंगे | सब मिलेंगे |",
     ["वह कल आएगा |", "हम भी चलेंगे |", "सब मिलेंगे |"]),
    ("short_sentences_negation", "समय नहीं | पैसा नहीं | कुछ नहीं |", ["समय नहीं |", "पैसा नहीं |", "कुछ नहीं |"]),
    ("short_sentences_comma", "हाँ, ठीक | नहीं, रुको | अच्छा, चलो |", ["हाँ, ठीक |", "नहीं, रुको |", "अच्छा, चलो |"]),
    ("five_word_item_breaks_run", "नई दिल्ली भारत की राजधानी | मुंबई आर्थिक राजधानी | कोलकाता पूर्व का शहर",
     ["नई दिल्ली भारत की राजधानी |", "मुंबई आर्थिक राजधानी |", "कोलकाता पूर्व का शहर"]),
    ("unspaced_pipes_split", "होम|देश|विदेश", ["होम|", "देश|", "विदेश"]),
    ("dialogue_turns_split", "लता जी : जी |मोदी जी : हाँ |लता जी : प्रणाम |",
     ["लता जी : जी |", "मोदी जी : हाँ |", "लता जी : प्रणाम |"]),
    ("devanagari_danda_split", "होम । देश । विदेश", ["होम ।", "देश ।", "विदेश"]),
    ("double_pipe_split", "राम || श्याम || सीता", ["राम ||", "श्याम ||", "सीता"]),
    ("breadcrumb_whole", "होम » देश » मध्य प्रदेश » भोपाल", ["होम » देश » मध्य प्रदेश » भोपाल"]),
]


@pytest.mark.parametrize("name,line,expected", MENU_CASES, ids=[c[0] for c in MENU_CASES])
def test_menus(name, line, expected):
    assert split_line(line) == expected
    assert "".join(expected).replace(" ", "") == line.replace(" ", "")  # nothing lost or moved


def test_sentences_cover_the_line():
    line = "यह पहला है। यह दूसरा? हाँ! डॉ. राम | अंत"
    assert " ".join(split_line(line)) == line


def test_split_sentences_keeps_line_order():
    assert split_sentences(["एक। दो।", "तीन"]) == ["एक।", "दो।", "तीन"]
