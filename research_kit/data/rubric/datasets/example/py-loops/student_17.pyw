number = int(input("Enter a number: "))
counter = 1

while counter <= 10:
    print(number, "x", counter, "=", number * counter)
    counter = counter + 1

print("That's the whole table!")
