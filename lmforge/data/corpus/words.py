"""Word lists of the embedded synthetic corpus: names (with pronouns), animals, places, objects, feelings.

Small closed vocabularies keep the corpus learnable by a tiny model (the TinyStories idea, Eldan & Li 2023).
"""

GIRLS = ("Lily", "Mia", "Anna", "Sara", "Emma", "Zoe", "Lucy", "Ella", "Nora", "Ruby", "Maya", "Ivy")
BOYS = ("Tom", "Ben", "Max", "Leo", "Sam", "Jack", "Tim", "Finn", "Omar", "Noah", "Eli", "Jake")
ANIMALS = ("cat", "dog", "bunny", "bird", "fox", "bear", "duck", "frog", "mouse", "owl", "puppy", "kitten")
ADJECTIVES = ("little", "happy", "brave", "shy", "kind", "curious", "small", "funny", "gentle", "clever")
PLACES = ("a small house", "a big forest", "a quiet village", "a sunny farm", "a busy town", "a green park",
          "a tall tree", "a cozy cave", "a blue lake", "a little garden")
OBJECTS = ("ball", "kite", "box", "hat", "book", "shell", "key", "cup", "drum", "boat", "stone", "flower")
COLORS = ("red", "blue", "green", "yellow", "pink", "purple", "orange", "white", "shiny", "golden")
SPOTS = ("under a bush", "near the river", "in the grass", "behind a rock", "on the hill", "by the door",
         "in the sand", "under the bed")
ACTIVITIES = ("play in the sun", "run fast", "sing songs", "jump high", "read books", "look at the stars",
              "dig holes", "climb trees", "draw pictures", "swim in the pond")
FEELINGS_GOOD = ("happy", "glad", "proud", "excited")
FEELINGS_BAD = ("sad", "scared", "worried", "upset")
FOODS = ("bread", "apples", "fish", "rice", "cheese", "soup", "berries", "corn", "honey", "beans")
JOBS = ("farmers", "fishers", "bakers", "miners", "weavers", "traders", "builders", "potters")
DIRECTIONS = ("north", "south", "east", "west")
SYLLABLES = ("ka", "lo", "mi", "ran", "tor", "vel", "zu", "pa", "den", "shi", "mor", "bel", "tan", "qui", "ro",
             "fa", "nel", "dra", "sen", "ul")
COUNTABLE = ("apples", "books", "stones", "cookies", "shells", "flowers", "coins", "eggs", "cars", "balls")
